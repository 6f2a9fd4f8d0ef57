// The admin page: plain DOM and fetch, no build step. Signed in by the session cookie
// (/admin/login); every API call carries x-gateway-admin: 1, which the API requires of
// cookie-authenticated requests (a cross-site form cannot send it).
"use strict";

(function () {
  if (document.body.classList.contains("login")) {
    if (new URLSearchParams(location.search).has("failed")) {
      document.getElementById("failed").hidden = false;
    }
    return;
  }

  const $ = (id) => document.getElementById(id);

  async function api(method, path, body) {
    const init = { method, headers: { "x-gateway-admin": "1" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const data = await r.json().catch(() => ({}));
    if (r.status === 401) { location.href = "/admin/ui"; throw new Error("signed out"); }
    if (!r.ok) { throw new Error((data.error && data.error.message) || r.statusText); }
    return data;
  }

  function showError(err) {
    const box = $("error");
    box.textContent = err ? String(err.message || err) : "";
    box.hidden = !err;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
    return node;
  }

  const usd = (x) => "$" + (Math.round(x * 1e6) / 1e6).toString();

  function budgetBar(budget) {
    if (!budget) return el("span", { class: "muted" }, "none");
    const used = budget.used_usd || 0;
    const share = budget.usd > 0 ? Math.min(1, used / budget.usd) : 1;
    const bar = el("div", { class: "bar" + (share >= 0.9 ? " full" : "") });
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(share * 100).toFixed(1)}%`; // CSSOM: the CSP forbids style=""
    bar.append(fill);
    return el("div", { class: "budget" }, bar,
      el("small", {}, `${usd(used)} of ${usd(budget.usd)} / ${budget.period}`));
  }

  const list = (text) => {
    const items = (text || "").split(",").map((s) => s.trim()).filter(Boolean);
    return items.length ? items : null;
  };

  async function spendOf(query) {
    return api("GET", "/admin/spend" + (query ? "?" + query : ""));
  }

  async function loadKeys(teams) {
    const { data } = await api("GET", "/admin/keys");
    const body = $("keys").querySelector("tbody");
    body.replaceChildren();
    const spends = await Promise.all(
      data.slice(0, 100).map((k) => spendOf("key=" + encodeURIComponent(k.id)).catch(() => null)));
    data.forEach((k, i) => {
      const spend = spends[i];
      const revoke = el("button", { class: "quiet", "data-id": k.id }, "Revoke");
      revoke.disabled = k.status !== "active";
      revoke.addEventListener("click", async () => {
        try { await api("POST", `/admin/keys/${k.id}/revoke`); await refresh(); } catch (e) { showError(e); }
      });
      body.append(el("tr", { "data-key": k.id },
        el("td", { class: "name" }, k.name), el("td", {}, el("code", {}, k.id)),
        el("td", {}, k.team || "—"), el("td", { class: "status " + k.status }, k.status),
        el("td", {}, budgetBar(k.budget)),
        el("td", { class: "spend" }, spend ? usd(spend.total.usd) : "—"), el("td", {}, revoke)));
    });
    const scope = $("spend-scope");
    const current = scope.value;
    scope.replaceChildren(el("option", { value: "" }, "everything"));
    for (const t of teams) scope.append(el("option", { value: "team=" + t.id }, "team " + t.id));
    for (const k of data) scope.append(el("option", { value: "key=" + k.id }, "key " + k.name));
    scope.value = current;
  }

  async function loadTeams() {
    const { data } = await api("GET", "/admin/teams");
    const body = $("teams").querySelector("tbody");
    body.replaceChildren();
    const select = $("key-team");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "none"));
    for (const t of data) {
      body.append(el("tr", { "data-team": t.id }, el("td", {}, t.id), el("td", {}, String(t.keys.length)),
        el("td", {}, (t.regions || []).join(", ") || "any"), el("td", {}, budgetBar(t.budget))));
      select.append(el("option", { value: t.id }, t.id));
    }
    select.value = chosen;
    return data;
  }

  async function loadChart() {
    const spend = await spendOf($("spend-scope").value);
    $("spend-total").textContent = `${usd(spend.total.usd)} · ${spend.total.requests} requests`;
    const days = spend.days;
    const max = Math.max(...days.map((d) => d.usd), 1e-9);
    const w = 720, h = 160, gap = 2, bw = w / days.length - gap;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h + 20}`);
    days.forEach((d, i) => {
      const bh = d.usd > 0 ? Math.max(2, (d.usd / max) * h) : 0;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(i * (bw + gap)));
      rect.setAttribute("y", String(h - bh));
      rect.setAttribute("width", String(bw));
      rect.setAttribute("height", String(bh));
      rect.setAttribute("class", "day");
      const title = document.createElementNS(ns, "title");
      title.textContent = `${d.date}: ${usd(d.usd)}, ${d.requests} requests`;
      rect.append(title);
      svg.append(rect);
    });
    for (const [x, anchor, d] of [[0, "start", days[0]], [w, "end", days[days.length - 1]]]) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(x));
      label.setAttribute("y", String(h + 15));
      label.setAttribute("text-anchor", anchor);
      label.textContent = d.date;
      svg.append(label);
    }
    $("chart").replaceChildren(svg);
  }

  async function refresh() {
    try {
      const teams = await loadTeams();
      await loadKeys(teams);
      await loadChart();
      showError(null);
    } catch (e) { showError(e); }
  }

  function budgetFrom(usdInput, periodInput) {
    const v = usdInput.value.trim();
    return v === "" ? null : { usd: Number(v), period: periodInput.value };
  }

  $("create-key").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      name: $("key-name").value.trim(),
      team: $("key-team").value || null,
      budget: budgetFrom($("key-usd"), $("key-period")),
      regions: list($("key-regions").value),
      models: list($("key-models").value),
    };
    try {
      const made = await api("POST", "/admin/keys", body);
      $("new-secret-value").textContent = made.key;
      $("new-secret").hidden = false;
      ev.target.reset();
      await refresh();
    } catch (e) { showError(e); }
  });

  $("create-team").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      id: $("team-id").value.trim(),
      budget: budgetFrom($("team-usd"), $("team-period")),
      regions: list($("team-regions").value),
    };
    try { await api("POST", "/admin/teams", body); ev.target.reset(); await refresh(); }
    catch (e) { showError(e); }
  });

  $("spend-scope").addEventListener("change", () => loadChart().catch(showError));
  refresh();
  setInterval(refresh, 15000);
})();
