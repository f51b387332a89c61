// The callback page of a flow run in a popup: tell the connect page that
// opened it and close. The message goes only to a page on this very origin
// (the connect page checks that it comes from its own); public_url plays no
// part, so the popup works, and closes, without it.
(function () {
  "use strict";
  var me = document.querySelector("script[data-connector]");
  if (!me || !window.opener) {
    return;
  }
  try {
    window.opener.postMessage({ type: "oauthconn.connected", connector: me.dataset.connector }, window.location.origin);
  } finally {
    window.close();
  }
})();
