// Progress of a form whose answer takes a while (a DR drill reading every instance, a
// fixity check): the form works without this; with it, the button is disabled against a
// second submission and the page says for how long the work has been running.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form || !form.getAttribute || form.getAttribute("data-busy") === null || event.defaultPrevented) {
    return;
  }
  var status = document.getElementById(form.getAttribute("data-busy"));
  var button = form.querySelector("button[type=submit]");
  var started = Date.now();
  // Disabled after this event, or the button's own value would not be sent.
  window.setTimeout(function () { if (button) { button.disabled = true; } }, 0);
  if (!status) {
    return;
  }
  var text = status.getAttribute("data-text") || "Running";
  function tick() {
    var seconds = Math.round((Date.now() - started) / 1000);
    status.textContent = text + " for " + seconds + " s; the page answers when it is done.";
  }
  tick();
  window.setInterval(tick, 1000);
});
