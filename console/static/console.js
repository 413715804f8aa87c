// The console's own script: small conveniences on top of plain forms (every page works
// without it). Line numbers beside a spec, a problem's link moves the cursor to its line,
// and forms that ask for a confirmation.
(function () {
  "use strict";

  // Line numbers beside the spec; a line with a problem is marked (its number in red, with
  // a sign that does not depend on colour).
  function numberLines(textarea) {
    var gutter = document.getElementById("gutter");
    if (!gutter) return;
    var bad = {};
    document.querySelectorAll("#problems a.goto").forEach(function (a) {
      bad[a.dataset.line] = true;
    });
    var lines = textarea.value.split("\n").length;
    gutter.textContent = "";
    for (var i = 1; i <= lines; i++) {
      var row = document.createElement("span");
      row.textContent = (bad[i] ? "\u25B6 " : "") + i + "\n";
      if (bad[i]) row.className = "bad-line";
      gutter.appendChild(row);
    }
    gutter.scrollTop = textarea.scrollTop;
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var spec = document.getElementById("spec");
    if (spec && event.target.id === "problems") numberLines(spec);
  });

  function goTo(textarea, line, column) {
    var rows = textarea.value.split("\n");
    var offset = 0;
    for (var i = 0; i < line - 1 && i < rows.length; i++) offset += rows[i].length + 1;
    offset += Math.max(0, column - 1);
    textarea.focus();
    textarea.setSelectionRange(offset, offset);
    var lineHeight = textarea.scrollHeight / Math.max(rows.length, 1);
    textarea.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var spec = document.querySelector("textarea[data-lines], #spec");
    if (spec) {
      numberLines(spec);
      spec.addEventListener("input", function () { numberLines(spec); });
      spec.addEventListener("scroll", function () {
        var gutter = document.getElementById("gutter");
        if (gutter) gutter.scrollTop = spec.scrollTop;
      });
    }
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a.goto");
    if (!link) return;
    var target = document.getElementById(link.getAttribute("href").slice(1));
    if (!target) return;
    event.preventDefault();
    goTo(target, parseInt(link.dataset.line, 10), parseInt(link.dataset.column, 10));
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
})();
