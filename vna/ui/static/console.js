// The VNA console's only script.  Every form works without it; it adds a confirmation to
// forms marked data-confirm (merges, discards, approvals), so a slip of the finger does
// not change patient records.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
