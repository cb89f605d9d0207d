// A link of the form /login#token=... logs in at once: the fragment never reaches the
// server, its logs or a Referer header; it is removed from the address bar before use.
(function () {
  "use strict";
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, "", window.location.pathname);
  const form = document.getElementById("login");
  document.getElementById("token").value = decodeURIComponent(match[1]);
  form.submit();
})();
