//! The console's stylesheet and script, in the binary: no build step, no files to install.

/// Bumped with any change below, so browsers never keep an old copy (assets are cached for a
/// year under their versioned URL).
pub const VERSION: &str = "1";

pub const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#5d6675; --line:#dde1e8; --bg:#f6f7f9; --card:#fff;
  --accent:#0b63c5; --bad:#b3261e; --good:#1b7a3a; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
header { background:#17202e; color:#fff; padding:.5rem 1rem; display:flex; flex-wrap:wrap;
  align-items:center; gap:.25rem 1rem; }
header .brand { font-weight:700; color:#fff; margin-right:.5rem; }
header nav { display:flex; flex-wrap:wrap; gap:.25rem .9rem; }
header nav a { color:#cfd8e6; } header nav a.on { color:#fff; font-weight:600; }
header .who { margin-left:auto; color:#cfd8e6; font-size:.9rem; display:flex; gap:.5rem;
  align-items:center; }
header .who button { background:none; border:1px solid #56627a; color:#cfd8e6; }
main { padding:1rem; max-width:1200px; margin:0 auto; }
h1 { font-size:1.35rem; margin:.2rem 0 1rem; word-break:break-all; }
h2 { font-size:1.1rem; margin:1.5rem 0 .5rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:1rem;
  margin-bottom:1rem; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; background:var(--card); }
th, td { text-align:left; padding:.4rem .6rem; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-size:.8rem; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); }
td.num, th.num { text-align:right; white-space:nowrap; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:.85rem; }
.muted { color:var(--muted); }
.tag { display:inline-block; background:#e8eef8; border-radius:3px; padding:0 .35rem;
  margin:0 .2rem .2rem 0; font-family:ui-monospace,monospace; font-size:.8rem; }
.state { font-weight:600; } .state.RUNNING { color:var(--good); }
.state.STOPPED { color:var(--muted); } .state.PENDING, .state.PROVISIONING,
.state.ACTIVATING, .state.DEACTIVATING, .state.STOPPING { color:var(--warn); }
.bad { color:var(--bad); } .good { color:var(--good); }
.flash { padding:.6rem .8rem; border-radius:4px; margin-bottom:1rem; }
.flash.ok { background:#e6f4ea; } .flash.error { background:#fce8e6; }
form.inline { display:inline; }
input[type=text], input[type=password], input[type=search] { font:inherit; padding:.35rem .5rem;
  border:1px solid #b9c0cc; border-radius:4px; max-width:100%; }
button { font:inherit; padding:.3rem .7rem; border-radius:4px; border:1px solid #9aa4b4;
  background:#fff; cursor:pointer; }
button.danger { border-color:var(--bad); color:var(--bad); }
button.primary { background:var(--accent); border-color:var(--accent); color:#fff; }
.pull { display:flex; gap:.4rem; align-items:center; margin:.2rem 0; }
.pull code { background:#eef1f5; padding:.15rem .4rem; border-radius:3px; overflow-x:auto;
  white-space:nowrap; max-width:100%; }
pre { background:#0f1620; color:#e2e8f0; padding:.8rem; border-radius:6px; overflow:auto;
  max-height:32rem; font-size:.8rem; }
dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:.25rem 1rem; margin:0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; word-break:break-all; }
.login { max-width:26rem; margin:3rem auto; }
.login label { display:block; margin:.6rem 0 .2rem; }
.login input { width:100%; }
details summary { cursor:pointer; }
@media (max-width: 640px) {
  main { padding:.6rem; }
  th.wide, td.wide { display:none; }
  header .who { margin-left:0; }
  table { font-size:.9rem; }
}
"#;

pub const JS: &str = r#"
document.addEventListener('click', function (e) {
  var b = e.target.closest('[data-copy]');
  if (!b) return;
  var text = b.getAttribute('data-copy');
  var done = function () { var t = b.textContent; b.textContent = 'Copied'; setTimeout(function () { b.textContent = t; }, 1200); };
  if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); }
  else { var a = document.createElement('textarea'); a.value = text; document.body.appendChild(a); a.select();
    try { document.execCommand('copy'); done(); } finally { a.remove(); } }
});
document.addEventListener('submit', function (e) {
  var q = e.target.getAttribute('data-confirm');
  if (q && !window.confirm(q)) e.preventDefault();
});
(function () {
  var live = document.querySelector('[data-live]');
  if (!live || !window.EventSource) return;
  var source = new EventSource(live.getAttribute('data-live'));
  source.addEventListener('task', function (e) {
    live.innerHTML = e.data;
    var state = live.querySelector('[data-state]');
    if (state && state.getAttribute('data-state') === 'STOPPED') source.close();
  });
})();
"#;
