"""HTML and Markdown for the demo: tool steps, product cards, the cart, a task's score and gold.

Everything that comes from the catalogue, a task or the model is escaped here: the chat renders
HTML, and neither product text nor model output is trusted.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import urlparse

SERVICE_LABELS = {"official": "Official store", "freeShipping": "Free shipping", "COD": "Cash on delivery",
                  "flashsale": "Flash sale"}
# Shown under every product image: catalogue images are remote, and the demo often runs offline.
PLACEHOLDER_SVG = ("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 96 96'>"
                   "<rect width='96' height='96' rx='10' fill='%23eef1f6'/><path d='M30 38h36l-4 30H34z' "
                   "fill='none' stroke='%239aa5b8' stroke-width='4'/><path d='M40 38v-6a8 8 0 0 1 16 0v6' "
                   "fill='none' stroke='%239aa5b8' stroke-width='4'/></svg>")
MAX_STEP_BODY_CHARS = 1800

CSS = """
.sl-cards {display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0;}
.sl-card {width: 220px; border: 1px solid #d9dee8; border-radius: 10px; padding: 8px; background: #fff;
          color: #1f2937; font-size: 13px; line-height: 1.35;}
.sl-thumb {position: relative; width: 100%; height: 120px; border-radius: 8px; overflow: hidden;
           background: #eef1f6 url("PLACEHOLDER") center / 72px no-repeat;}
.sl-thumb img {position: absolute; inset: 0; width: 100%; height: 100%; object-fit: cover; color: transparent;}
/* Chromium and Firefox draw an img's ::before only when the image failed: cover the broken-image icon. */
.sl-thumb img::before {content: ""; position: absolute; inset: 0;
           background: #eef1f6 url("PLACEHOLDER") center / 72px no-repeat;}
.sl-title {font-weight: 600; margin: 6px 0 2px; display: -webkit-box; -webkit-line-clamp: 3;
           -webkit-box-orient: vertical; overflow: hidden;}
.sl-price {font-size: 16px; font-weight: 700; color: #b91c1c;}
.sl-meta {color: #6b7280; font-size: 12px;}
.sl-badge {display: inline-block; background: #e0f2fe; color: #075985; border-radius: 6px; padding: 0 5px;
           margin: 2px 2px 0 0; font-size: 11px;}
.sl-attrs {color: #374151; font-size: 12px; margin-top: 3px;}
.sl-cart table, .sl-score table {width: 100%; border-collapse: collapse; font-size: 13px;}
.sl-cart td, .sl-cart th, .sl-score td, .sl-score th {border-bottom: 1px solid #e5e7eb; padding: 3px 4px;
           text-align: left;}
.sl-ok {color: #15803d; font-weight: 700;} .sl-bad {color: #b91c1c; font-weight: 700;}
.sl-total {font-size: 15px; font-weight: 700;}
""".replace("PLACEHOLDER", PLACEHOLDER_SVG)


def esc(value: Any) -> str:
    """HTML-escaped text: for anything from the catalogue, a task or the model."""
    return escape(str(value), quote=True)


def _price(value: Any) -> str:
    try:
        return f"{float(value):,.2f}"
    except (TypeError, ValueError):
        return esc(value)


def _image_url(url: Any) -> str | None:
    url = str(url or "")
    return url if urlparse(url).scheme in ("http", "https") else None


def tool_step_title(name: str, arguments: dict[str, Any] | str | None, icon: str = "🔧") -> str:
    """One line per tool call, e.g. `🔎 find_product(q="red case", price="0-20")` (the icon is the
    tool's own, from its declaration)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {"raw": arguments}
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (arguments or {}).items()
                     if isinstance(arguments, dict))
    if len(args) > 120:
        args = args[:117] + "..."
    return f"{icon} {escape(str(name)[:80], quote=False)}({escape(args, quote=False)})"


def tool_step_body(name: str, observation: str, failed: bool = False) -> str:
    """What a tool returned, compactly: search hits as a list, errors (`failed`) in bold, the rest as text."""
    if failed:
        return f"**{esc(observation[:MAX_STEP_BODY_CHARS])}**"
    data: Any = None
    try:
        data = json.loads(observation)
    except json.JSONDecodeError:
        pass
    if name == "find_product" and isinstance(data, list):
        lines = [f"{i + 1}. {esc(p.get('title', ''))} · **{_price(p.get('price'))}** · id `{esc(p.get('product_id'))}`"
                 for i, p in enumerate(data) if isinstance(p, dict)]
        return "\n".join(lines) or esc(observation)
    if name == "view_product_information" and isinstance(data, list):
        parts = []
        for p in data:
            if not isinstance(p, dict):
                continue
            if "error" in p:
                parts.append(f"`{esc(p.get('product_id'))}`: {esc(p['error'])}")
                continue
            attrs = "; ".join(f"{esc(k)}: {esc(', '.join(map(str, v)) if isinstance(v, list) else v)}"
                              for k, v in (p.get("attributes") or {}).items())
            skus = "; ".join(" / ".join(f"{esc(k)}: {esc(v)}" for k, v in o.items())
                             for o in (p.get("sku_options") or {}).values() if isinstance(o, dict))
            parts.append(f"`{esc(p.get('product_id'))}`: {esc(str(p.get('description', ''))[:240])}"
                         + (f"<br>attributes: {attrs}" if attrs else "") + (f"<br>options: {skus}" if skus else ""))
        return "\n\n".join(parts) or esc(observation)
    text = observation if len(observation) <= MAX_STEP_BODY_CHARS else observation[:MAX_STEP_BODY_CHARS] + " …"
    return esc(text)


def product_card(product: dict[str, Any]) -> str:
    url = _image_url(product.get("main_image_url"))
    # alt="" keeps a broken remote image invisible, so the placeholder behind it shows instead.
    image = f'<img src="{esc(url)}" alt="" loading="lazy">' if url else ""
    services = "".join(f'<span class="sl-badge">{esc(SERVICE_LABELS.get(s, s))}</span>'
                       for s in product.get("service") or [])
    attrs = "; ".join(f"{esc(k)}: {esc(', '.join(map(str, v)) if isinstance(v, list) else v)}"
                      for k, v in list((product.get("attributes") or {}).items())[:4])
    options = [" / ".join(f"{esc(v)}" for v in o.values()) for o in (product.get("sku_options") or {}).values()
               if isinstance(o, dict)]
    option_line = f'<div class="sl-attrs">options: {"; ".join(options[:4])}</div>' if options else ""
    return (f'<div class="sl-card" data-product-id="{esc(product.get("product_id"))}">'
            f'<div class="sl-thumb">{image}</div>'
            f'<div class="sl-title">{esc(product.get("title", ""))}</div>'
            f'<div class="sl-price">{_price(product.get("price"))}</div>'
            f'<div class="sl-meta">shop {esc(product.get("shop_id", ""))} · id {esc(product.get("product_id", ""))}'
            f' · {int(product.get("sold_count") or 0):,} sold</div>'
            f"<div>{services}</div>"
            + (f'<div class="sl-attrs">{attrs}</div>' if attrs else "") + option_line + "</div>")


def product_cards(products: list[dict[str, Any]]) -> str:
    return '<div class="sl-cards">' + "".join(product_card(p) for p in products) + "</div>"


def cart_panel(summary: dict[str, Any]) -> str:
    items = summary.get("items") or []
    if not items:
        rows = '<tr><td colspan="4">Your cart is empty.</td></tr>'
    else:
        rows = "".join(f'<tr data-product-id="{esc(i["product_id"])}"><td>{esc(i["title"])}</td>'
                       f'<td>{int(i["quantity"])}</td><td>{_price(i["price"])}</td><td>{_price(i["subtotal"])}</td></tr>'
                       for i in items)
    lines = [f'<div>Total: <b>{_price(summary.get("total", 0))}</b></div>']
    if summary.get("voucher"):
        lines.append(f'<div>Best voucher: {esc(summary["voucher"])} (−{_price(summary.get("discount", 0))})</div>')
    elif items:
        lines.append("<div>No voucher in your wallet applies yet.</div>")
    lines.append(f'<div class="sl-total">To pay: <span id="sl-to-pay">{_price(summary.get("total_after_voucher", 0))}'
                 "</span></div>")
    if summary.get("budget") is not None:
        ok = summary.get("within_budget")
        mark = '<span class="sl-ok">within budget</span>' if ok else '<span class="sl-bad">over budget</span>'
        lines.append(f'<div>Budget: {_price(summary["budget"])} · {mark}</div>')
    return (f'<div class="sl-cart" data-items="{len(items)}"><h3>🛒 Cart</h3><table><tr><th>product</th><th>qty</th>'
            f"<th>price</th><th>subtotal</th></tr>{rows}</table>{''.join(lines)}</div>")


def wallet_panel(vouchers: list[str]) -> str:
    if not vouchers:
        return ""
    return "<div class='sl-meta'>Wallet: " + " · ".join(esc(v) for v in vouchers) + "</div>"


def score_panel(score: dict[str, Any]) -> str:
    """A finished task's score: success, the rule score, and each constraint met or not."""
    def mark(ok: bool | None) -> str:
        return '<span class="sl-ok">✓</span>' if ok else '<span class="sl-bad">✗</span>'

    head = (f'<div class="sl-score" data-success="{str(bool(score["success"])).lower()}">'
            f'<h3>{"✅ Success" if score["success"] else "❌ Not solved"}</h3>'
            f'<div>intent {esc(score["intent"])} · constraint score <b>{score["constraint_score"]:.2f}</b> · '
            f'exact gold {score["gt"]:.2f}</div>')
    extra = []
    for key, label in (("shop_ok", "all products from one shop"), ("budget_ok", "within the budget after voucher"),
                       ("knowledge_ok", "knowledge attribute found"), ("title_ok", "title matches the gold")):
        if score.get(key) is not None:
            extra.append(f"<div>{mark(score[key])} {label}</div>")
    tables = []
    for i, row in enumerate(score.get("per_product") or []):
        checks = row.get("checks") or []
        if row.get("exact"):
            body = '<tr><td colspan="2"><span class="sl-ok">✓</span> the gold product itself</td></tr>'
        elif not checks:
            body = '<tr><td colspan="2"><span class="sl-bad">✗</span> no product recommended here</td></tr>'
        else:
            body = "".join(f"<tr><td>{mark(c['met'])}</td><td>{esc(c['requirement'])}</td></tr>" for c in checks)
        tables.append(f"<h4>Product {i + 1}: {esc(row.get('product_id') or '—')} "
                      f"(score {row.get('score', 0):.2f})</h4><table>{body}</table>")
    return head + "".join(extra) + "".join(tables) + "</div>"


def gold_panel(gold_products: list[dict[str, Any]], knowledge_attribute: str | None = None) -> str:
    note = f"<div>Knowledge attribute: <b>{esc(knowledge_attribute)}</b></div>" if knowledge_attribute else ""
    return f"<div class='sl-gold'><h3>Gold answer</h3>{note}{product_cards(gold_products)}</div>"


def rewrite_panel(query: str, rows: list[dict[str, Any]]) -> str:
    """The original query and each rewrite, with what it retrieves (`rows[0]` is the original)."""
    parts = [f"<div class='sl-rewrite'><h3>Rewrites of “{esc(query)}”</h3>"]
    for row in rows:
        label = "original" if row["original"] else "rewrite"
        hits = "".join(f"<li>{esc(h['title'])} · {_price(h['price'])} · <code>{esc(h['product_id'])}</code></li>"
                       for h in row["hits"]) or "<li>nothing found</li>"
        parts.append(f"<h4>{label}: {esc(row['query'])} <span class='sl-meta'>({row['total']:,} matches)</span></h4>"
                     f"<ol>{hits}</ol>")
    return "".join(parts) + "</div>"
