import Foundation

/// `GET /admin/`: the status page for a person. It holds no data: it asks for an admin token
/// once, keeps it in the tab's session storage (never in a URL or a cookie), and reads
/// `/admin/stats` with it every two seconds. One self-contained page, hand-drawn SVG charts, no
/// external asset; every figure that comes from a request (client names, workflow ids, routes)
/// is set as text, never as markup. Its Content-Security-Policy allows exactly its own inline
/// script and style (by hash) and requests to this origin.
enum StatusPage {
    static let style = """
    body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
    header{background:#1d2430;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
    header h1{font-size:17px;margin:0}header span{opacity:.75}
    main{padding:14px 18px;display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
    section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px}
    h2{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#5b6573;margin:0 0 6px}
    .big{font-size:28px;font-weight:600}.bad{color:#b42318}.ok{color:#067647}
    table{border-collapse:collapse;width:100%}td{padding:2px 4px;border-top:1px solid #eef0f3;overflow-wrap:anywhere}td.n{text-align:right;white-space:nowrap;overflow-wrap:normal}
    .verdict{padding:8px 18px;font-weight:600}.verdict.healthy{background:#dcfae6;color:#067647}
    .verdict.degraded{background:#fef0c7;color:#93370d}.verdict.failing{background:#fee4e2;color:#b42318}
    body.stale main,body.stale .verdict{opacity:.45;filter:grayscale(1)}
    #t-errors td:first-child,#t-errors td:last-child{white-space:nowrap}
    .note{color:#5b6573;font-size:12px}
    .bar{height:10px;background:#eef0f3;border-radius:5px;overflow:hidden}.bar div{height:10px;width:0;background:#3e63dd}
    svg{width:100%;height:60px}form{padding:30px 18px}input{font:inherit;padding:4px;width:360px}
    #err{color:#b42318;padding:0 18px}
    """

    static let script = """
    const key='pixxel-proxy-admin-token';const $=id=>document.getElementById(id);
    function ask(msg){$('login').hidden=false;$('page').hidden=true;$('err').textContent=msg||''}
    const usable=t=>/^[\\x21-\\x7e]+$/.test(t);
    $('login').addEventListener('submit',e=>{e.preventDefault();const t=$('token').value.trim();$('token').value='';
      if(!usable(t))return ask('a token is letters, digits and punctuation only (was a space or an invisible character pasted with it?)');
      sessionStorage.setItem(key,t);$('login').hidden=true;$('page').hidden=false;tick()});
    function text(id,v){$(id).textContent=v}
    function span(s){return s<120?Math.round(s)+' s':s<7200?Math.round(s/60)+' min':s<172800?Math.floor(s/3600)+' h '+Math.round(s%3600/60)+' min':Math.floor(s/86400)+' d '+Math.round(s%86400/3600)+' h'}
    function entries(n){return fmt(n)+(n===1?' entry':' entries')}
    function fmt(n){return n>=1e9?(n/1e9).toFixed(1)+'G':n>=1e6?(n/1e6).toFixed(1)+'M':n>=1e3?(n/1e3).toFixed(1)+'k':String(Math.round(n*10)/10)}
    function spark(id,values,max){const svg=$(id);while(svg.firstChild)svg.removeChild(svg.firstChild);const w=300,h=60,top=Math.max(max||0,...values,1);
      const pts=values.map((v,i)=>(i*w/Math.max(values.length-1,1)).toFixed(1)+','+(h-2-(v/top)*(h-4)).toFixed(1)).join(' ');
      const line=document.createElementNS('http://www.w3.org/2000/svg','polyline');line.setAttribute('points',pts);line.setAttribute('fill','none');
      line.setAttribute('stroke','#3e63dd');line.setAttribute('stroke-width','1.5');svg.setAttribute('viewBox','0 0 '+w+' '+h);svg.setAttribute('preserveAspectRatio','none');svg.appendChild(line)}
    function rows(id,items){const t=$(id);while(t.firstChild)t.removeChild(t.firstChild);
      if(!items.length){const r=t.insertRow();r.insertCell().textContent='none';return}
      for(const cells of items){const r=t.insertRow();cells.forEach((c,i)=>{const d=r.insertCell();d.textContent=c;if(i>0&&typeof c==='number')d.className='n'})}}
    function bar(id,used,budget){$(id).style.width=(budget>0?Math.min(100,100*used/budget):0)+'%'}
    function avg(a,n){const s=a.slice(-n);return s.length?s.reduce((x,y)=>x+y,0)/s.length:0}
    let since=null,busy=false;
    function lost(why){since=since||new Date();document.body.classList.add('stale');
      $('err').textContent=why+' since '+since.toISOString().slice(11,19)+' UTC: the figures below are from before then'}
    async function tick(){const token=sessionStorage.getItem(key);if(!token)return ask();
      if(!usable(token)){sessionStorage.removeItem(key);return ask('that token cannot be sent; type it again')}
      if(busy)return;busy=true;
      let r;try{r=await fetch('/admin/stats',{headers:{Authorization:'Bearer '+token},cache:'no-store',signal:AbortSignal.timeout(5000)})}catch(e){busy=false;return lost('the proxy does not answer')}
      busy=false;
      if(r.status===401||r.status===403){sessionStorage.removeItem(key);return ask('that token is not an admin token')}
      if(!r.ok)return lost('/admin/stats answered '+r.status);
      $('err').textContent='';since=null;document.body.classList.remove('stale');const s=await r.json();const se=s.series;
      const h=s.health||{state:'failing',reasons:['no verdict in /admin/stats']};const v=$('health');v.hidden=false;v.className='verdict '+h.state;
      v.textContent=h.state.toUpperCase()+(h.reasons.length?': '+h.reasons.join('; '):'');
      text('uptime',(s.version?'version '+s.version+', ':'')+'up '+span(s.uptime_seconds)+', updated '+new Date().toISOString().slice(11,19)+' UTC, every 2 s');text('rps',fmt(avg(se.requests,10)));text('ups',fmt(avg(se.upstream_calls,10)));
      text('ratio',(100*s.hit_ratio).toFixed(1)+'%');text('saved',fmt(s.upstream_calls_saved));
      const minuteHits=se.hits.slice(-60).reduce((a,b)=>a+b,0),minuteLookups=se.lookups.slice(-60).reduce((a,b)=>a+b,0);
      text('ratio1m','since start; '+(minuteLookups?(100*minuteHits/minuteLookups).toFixed(1)+'% in the last minute':'no cache lookups in the last minute'));
      const peak=a=>'last 5 min, peak '+fmt(Math.max(0,...a));text('n-rps',peak(se.requests)+'/s');text('n-ups',peak(se.upstream_calls)+'/s');
      spark('c-rps',se.requests);spark('c-ratio',se.lookups.map((q,i)=>q?se.hits[i]/q:0),1);spark('c-ups',se.upstream_calls);
      const b=s.budget;text('tokens',b.requests_per_second>0?fmt(b.tokens)+' of '+fmt(b.burst):'unlimited');text('queued',b.queued);
      text('pause',b.pause_remaining_seconds>0?b.pause_remaining_seconds.toFixed(1)+' s (upstream Retry-After)':'none');
      $('pause').className='n '+(b.pause_remaining_seconds>0?'bad':'ok');text('refused',b.refused);text('errs1m',se.upstream_errors.slice(-60).reduce((a,c)=>a+c,0));
      text('mem',entries(s.memory.entries)+', '+fmt(s.memory.bytes)+'B of '+fmt(s.memory.budget_bytes)+'B');bar('b-mem',s.memory.bytes,s.memory.budget_bytes);
      text('disk',entries(s.disk.entries)+', '+fmt(s.disk.bytes)+'B of '+fmt(s.disk.budget_bytes)+'B');bar('b-disk',s.disk.bytes,s.disk.budget_bytes);
      text('streams',s.streams.running+' running, '+s.streams.queued+' waiting');
      const cs=s.change_streams||{open:0,overflows:0};text('watchers',cs.open+' change streams, '+(s.held_requests||0)+' held waits');
      rows('t-clients',Object.entries(s.clients).sort((a,b)=>b[1]-a[1]).slice(0,10).map(([c,n])=>[c==='-'?'no token':c==='?'?'unknown token':c,n]));
      rows('t-workflows',s.workflows.map(w=>[w.id,w.requests]));
      rows('t-errors',s.recent_upstream_errors.slice().reverse().map(e=>[e.at.slice(11,19),e.route,e.outcome]))}
    if(!sessionStorage.getItem(key))ask();tick();setInterval(tick,2000);
    """

    static let body = """
    <!doctype html><html lang="en"><head><meta charset="utf-8"><title>pixxel-proxy status</title>
    <meta name="viewport" content="width=device-width"><style>\(style)</style></head><body>
    <header><h1>pixxel-proxy</h1><span id="uptime"></span></header>
    <div id="health" class="verdict" hidden></div>
    <p id="err"></p>
    <form id="login" hidden><p>Admin token (kept in this tab only):</p><input id="token" type="password" autocomplete="off" autofocus> <button>Show</button></form>
    <main id="page">
    <section><h2>Requests/s</h2><div class="big" id="rps">-</div><div>average of the last 10 s</div><svg id="c-rps"></svg><div class="note" id="n-rps"></div></section>
    <section><h2>Hit ratio</h2><div class="big" id="ratio">-</div><div id="ratio1m"></div><svg id="c-ratio"></svg><div class="note">last 5 min, share of cache lookups answered from the cache</div></section>
    <section><h2>Upstream calls/s</h2><div class="big" id="ups">-</div><div>average of the last 10 s; calls the cache saved since start: <b id="saved">-</b></div><svg id="c-ups"></svg><div class="note" id="n-ups"></div></section>
    <section><h2>Upstream budget</h2><table><tr><td>tokens left</td><td class="n" id="tokens"></td></tr><tr><td>waiting</td><td class="n" id="queued"></td></tr>
    <tr><td>pause</td><td class="n" id="pause"></td></tr><tr><td>refused since start</td><td class="n" id="refused"></td></tr>
    <tr><td>upstream errors, last minute</td><td class="n" id="errs1m"></td></tr><tr><td>streamed transfers</td><td class="n" id="streams"></td></tr>
    <tr><td>watchers</td><td class="n" id="watchers"></td></tr></table></section>
    <section><h2>Cache</h2><div>memory: <span id="mem"></span></div><div class="bar"><div id="b-mem"></div></div>
    <div>disk: <span id="disk"></span></div><div class="bar"><div id="b-disk"></div></div></section>
    <section><h2>Requests per client</h2><div class="note">since start, the ten busiest</div><table id="t-clients"></table></section>
    <section><h2>Busiest workflows</h2><div class="note">requests since start</div><table id="t-workflows"></table></section>
    <section><h2>Recent upstream errors</h2><div class="note">newest first: time (UTC), route, upstream status or failure</div><table id="t-errors"></table></section>
    </main><script>\(script)</script></body></html>
    """

    static let bytes = Array(body.utf8)

    /// Only this page's own script and style, and requests to this origin.
    static let contentSecurityPolicy = "default-src 'none'; script-src 'sha256-\(hash(script))'; style-src 'sha256-\(hash(style))'; "
        + "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static func hash(_ text: String) -> String {
        Data(Token.sha256(text)).base64EncodedString()
    }
}
