// stagewatch dashboard: live fragments over Server-Sent Events, sortable tables. No dependencies.
(function () {
  "use strict";

  // --- live fragments -----------------------------------------------------------------------------
  // <div data-live="/live/..."> holds elements with an id and data-fragment; each SSE event is named
  // after one of them and carries its new HTML, rendered (and escaped) by the server.

  function focusKey(el) {
    if (!el || !el.getAttribute) return null;
    return el.id ? "#" + el.id : el.getAttribute("href");
  }

  // Someone typing a reason into a form inside a live part must not lose it: skip that update.
  function busy(target) {
    var active = document.activeElement;
    if (active && target.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return true;
    return Array.prototype.some.call(target.querySelectorAll("input[type=text], textarea"), function (field) {
      return field.value !== field.defaultValue;
    });
  }

  // Elements with data-key whose text changed are highlighted for a moment, so a changed number is seen.
  function texts(target) {
    var found = {};
    target.querySelectorAll("[data-key]").forEach(function (el) { found[el.getAttribute("data-key")] = el.textContent; });
    return found;
  }

  function swap(target, html) {
    if (busy(target)) return;
    var key = target.contains(document.activeElement) ? focusKey(document.activeElement) : null;
    var before = texts(target);
    target.innerHTML = html;
    target.querySelectorAll("[data-key]").forEach(function (el) {
      var name = el.getAttribute("data-key");
      if (name in before && before[name] !== el.textContent) {
        el.classList.add("flash-change");
        // Parts of the page that are not live (a video's history, audit) are now out of date: say so.
        document.querySelectorAll("[data-stale-note]").forEach(function (note) { note.hidden = false; });
      }
    });
    if (key) {
      var again = key.charAt(0) === "#" ? target.querySelector(key) : target.querySelector('[href="' + CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  function setStatus(on) {
    var status = document.querySelector("[data-live-status]");
    if (!status) return;
    status.classList.toggle("on", on);
    status.classList.toggle("off", !on);
    status.textContent = on ? "Live: updates as it happens" : "Reconnecting…";
  }

  function connect(container) {
    if (!window.EventSource) return;
    var source = new EventSource(container.getAttribute("data-live"));
    source.onopen = function () { setStatus(true); };
    source.onerror = function () { setStatus(false); };
    container.querySelectorAll("[data-fragment]").forEach(function (target) {
      source.addEventListener(target.id, function (event) { swap(target, event.data); });
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  // --- sortable tables (the rows on this page) ---------------------------------------------------------

  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return "";
    var raw = cell.getAttribute("data-sort");
    return raw !== null ? raw : cell.textContent.trim();
  }

  function compare(a, b) {
    var x = parseFloat(a), y = parseFloat(b);
    if (!isNaN(x) && !isNaN(y) && String(x) === a.trim() && String(y) === b.trim()) return x - y;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (other) { other.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var order = compare(cellValue(r1, index), cellValue(r2, index));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function sortable(table) {
    table.querySelectorAll("thead th[data-sortable]").forEach(function (th) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent.trim();
      button.title = "Sort the rows on this page by " + button.textContent.toLowerCase();
      th.textContent = "";
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () { sortBy(table, th); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(connect);
    document.querySelectorAll("table[data-sortable]").forEach(sortable);
  });
})();
