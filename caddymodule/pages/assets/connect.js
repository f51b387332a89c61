// The connect page: Connect opens the provider in a popup, whose callback
// page posts back when done; Disconnect calls DELETE. The table is then
// redrawn from GET {base}/connectors, without a reload. Without JavaScript
// the links and forms work as plain navigation.
(function () {
  "use strict";
  var root = document.getElementById("connections");
  var base = root.dataset.base;
  var live = document.getElementById("live");

  function say(text) {
    live.textContent = text;
    live.className = "notice";
  }

  function date(s) {
    return s ? new Date(s).toLocaleString() : "";
  }

  function render(c) {
    var row = null;
    root.querySelectorAll("tr[data-connector]").forEach(function (r) {
      if (r.dataset.connector === c.name) {
        row = r;
      }
    });
    if (!row) {
      return;
    }
    var status = row.querySelector('[data-field="status"]');
    status.textContent = c.status;
    status.className = "status " + c.status;
    var detail = [];
    if (c.grant) {
      detail.push(c.grant + (c.token ? ": " + c.token : ""));
    }
    if (c.connected_by) {
      detail.push("by " + c.connected_by);
    }
    if (c.connected_at) {
      detail.push("since " + date(c.connected_at));
    }
    if (c.last_error) {
      detail.push(c.last_error);
    }
    row.querySelector('[data-field="detail"]').textContent = detail.join(" — ");
    row.querySelector('[data-field="expires"]').textContent = date(c.expires_at);
    var connect = row.querySelector('[data-action="connect"]');
    if (connect) {
      var label = c.status === "connected" ? "Reconnect" : "Connect";
      connect.textContent = label;
      connect.setAttribute("aria-label", label + " " + c.name);
    }
    var disconnect = row.querySelector('[data-field="disconnect"]');
    if (disconnect) {
      disconnect.hidden = c.status !== "connected";
    }
  }

  function refresh() {
    return fetch(base + "/connectors", { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (list) { list.forEach(render); });
  }

  root.addEventListener("click", function (e) {
    var el = e.target.closest("[data-action]");
    if (!el) {
      return;
    }
    var name = el.closest("tr").dataset.connector;
    if (el.dataset.action === "connect") {
      var url = el.href + (el.href.indexOf("?") < 0 ? "?" : "&") + "popup=1";
      var w = window.open(url, "oauthconn-" + name, "popup,width=600,height=720");
      if (w) {
        e.preventDefault();
        say("Authorizing " + name + " in a popup window…");
      }
      return; // blocked popup: plain navigation
    }
    if (el.dataset.action === "disconnect") {
      e.preventDefault();
      fetch(base + "/connectors/" + encodeURIComponent(name), { method: "DELETE", credentials: "same-origin" })
        .then(function (r) {
          say(r.ok ? name + " is disconnected." : "Disconnecting " + name + " failed (" + r.status + ").");
          return refresh();
        });
    }
  });

  window.addEventListener("message", function (e) {
    if (e.origin !== window.location.origin || !e.data || e.data.type !== "oauthconn.connected") {
      return;
    }
    say(e.data.connector + " is connected.");
    refresh();
  });
})();
