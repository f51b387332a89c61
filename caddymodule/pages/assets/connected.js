// The callback page of a flow run in a popup: tell the connect page that
// opened it (only if it is on our own origin) and close.
(function () {
  "use strict";
  var me = document.querySelector("script[data-connector]");
  if (!me || !window.opener) {
    return;
  }
  window.opener.postMessage({ type: "oauthconn.connected", connector: me.dataset.connector }, me.dataset.origin);
  window.close();
})();
