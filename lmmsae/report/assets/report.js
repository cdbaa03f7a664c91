/* lmmsae report: sort, filter and search tables, switch image views, and compare two explainers.
   Hand-written, no dependencies; reads only the page's own DOM (never inserts HTML). */
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) return numeric ? NaN : "";
    var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
    if (numeric) return v === "" ? NaN : parseFloat(v);
    return v.trim().toLowerCase();
  }

  function sortBy(table, index, descending) {
    var header = table.tHead.rows[0].cells;
    var numeric = header[index].getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      var xMissing = numeric ? isNaN(x) : x === "", yMissing = numeric ? isNaN(y) : y === "";
      if (xMissing || yMissing) return xMissing === yMissing ? 0 : (xMissing ? 1 : -1);
      var order = numeric ? x - y : (x < y ? -1 : x > y ? 1 : 0);
      return descending ? -order : order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var i = 0; i < header.length; i++) header[i].removeAttribute("aria-sort");
    header[index].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  function makeSortable(table) {
    var header = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(header, function (th, index) {
      th.tabIndex = 0;
      th.classList.add("sort");
      function activate() {
        var current = th.getAttribute("aria-sort");
        var descending = current ? current === "ascending" : th.getAttribute("data-type") === "num";
        sortBy(table, index, descending);
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(); } });
    });
  }

  function applyFilters(id) {
    var table = document.getElementById(id);
    if (!table) return;
    var filters = document.querySelectorAll("[data-table='" + id + "'][data-filter]");
    var search = document.querySelector("[data-search='" + id + "']");
    var words = search ? search.value.toLowerCase().split(/\s+/).filter(Boolean) : [];
    var rows = table.tBodies[0].rows, shown = 0;
    for (var r = 0; r < rows.length; r++) {
      var row = rows[r], ok = true;
      for (var f = 0; f < filters.length && ok; f++) {
        var want = filters[f].value;
        var have = (row.getAttribute("data-" + filters[f].getAttribute("data-filter")) || "").split("|");
        if (want && have.indexOf(want) < 0) ok = false;
      }
      if (ok && words.length) {
        var text = Array.prototype.map.call(row.querySelectorAll(".s"), function (c) { return c.textContent; })
          .join(" ").toLowerCase();
        ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      }
      row.hidden = !ok;
      if (ok) shown++;
    }
    var count = document.getElementById("count");
    if (count) count.textContent = shown + " of " + rows.length;
  }

  function showMode(button) {
    var mode = button.getAttribute("data-mode");
    document.querySelectorAll(".toggles button").forEach(function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    document.querySelectorAll(".gallery img[data-" + mode + "]").forEach(function (img) {
      img.src = img.getAttribute("data-" + mode);
    });
    document.querySelectorAll(".gallery").forEach(function (g) { g.setAttribute("data-mode", mode); });
  }

  function updateDiff(id, sort) {
    var table = document.getElementById(id);
    if (!table) return;
    function chosen(key) {
      var s = document.querySelector("[data-table='" + id + "'][data-diff='" + key + "']");
      return s ? s.value : "0";
    }
    var s = chosen("scorer"), a = chosen("A"), b = chosen("B");
    var header = table.tHead.rows[0].cells, column = header.length - 1;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var x = row.getAttribute("data-s" + s + "-" + a), y = row.getAttribute("data-s" + s + "-" + b);
      var cell = row.cells[column];
      if (x && y) {
        var d = parseFloat(x) - parseFloat(y);
        cell.setAttribute("data-v", String(d));
        cell.textContent = String(parseFloat(d.toPrecision(3)));
      } else {
        cell.setAttribute("data-v", "");
        cell.textContent = "-";
      }
    });
    if (sort) sortBy(table, column, true);
  }

  document.querySelectorAll("table.sortable").forEach(makeSortable);
  document.querySelectorAll("[data-filter], [data-search]").forEach(function (el) {
    var id = el.getAttribute("data-table") || el.getAttribute("data-search");
    el.addEventListener("input", function () { applyFilters(id); });
    el.addEventListener("change", function () { applyFilters(id); });
    applyFilters(id);  // a reloaded page keeps the browser's restored form values
  });
  document.querySelectorAll(".toggles button[data-mode]").forEach(function (b) {
    b.addEventListener("click", function () { showMode(b); });
  });
  document.querySelectorAll("[data-diff]").forEach(function (el) {
    var id = el.getAttribute("data-table");
    el.addEventListener("change", function () { updateDiff(id, true); });
  });
  var diffTables = {};
  document.querySelectorAll("[data-diff]").forEach(function (el) { diffTables[el.getAttribute("data-table")] = 1; });
  Object.keys(diffTables).forEach(function (id) { updateDiff(id, false); });
})();
