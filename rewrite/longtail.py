"""Long-tail queries with known gold products, generated from catalogue products.

Each query is written the way shoppers write when lexical search fails them: colloquial talk
around the product words, seller words swapped for shopper words, words dropped or reordered,
attributes described instead of named, price and service wishes in prose; and ShoppingBench's
instruction style. The product it was written from is the gold answer, and the title words it
was built from are the "mined" rewrite (what a click log would pair with it).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from rewrite.rules import content_words

STYLES = ("colloquial", "paraphrase", "drop", "swap", "attribute", "shoppingbench")

# Seller word -> words shoppers use instead (none of them in the seller's title).
SHOPPER_WORDS: dict[str, list[str]] = {
    "case": ["cover", "protector"], "cover": ["case", "protector"], "shirt": ["top", "tee"],
    "tshirt": ["tee", "top"], "t-shirt": ["tee", "top"], "sneakers": ["rubber shoes", "trainers"],
    "shoes": ["footwear", "kicks"], "bag": ["pouch", "tote"], "backpack": ["school bag", "rucksack"],
    "pants": ["trousers", "slacks"], "dress": ["gown", "frock"], "watch": ["timepiece", "wristwatch"],
    "bottle": ["flask", "tumbler"], "tumbler": ["flask", "thermos"], "charger": ["power adapter", "plug"],
    "cable": ["cord", "wire"], "earphones": ["earbuds", "headset"], "headphones": ["headset", "cans"],
    "speaker": ["sound box", "soundbar"], "lamp": ["light", "lighting"], "light": ["lamp", "bulb"],
    "toy": ["plaything", "playset"], "toys": ["playthings", "playsets"], "blocks": ["bricks", "building set"],
    "calculator": ["adding machine", "calc"], "wheel": ["caster", "roller"], "mug": ["cup", "coffee cup"],
    "cup": ["mug", "glass"], "sofa": ["couch", "settee"], "pillow": ["cushion", "headrest"],
    "blanket": ["throw", "comforter"], "knife": ["blade", "cutter"], "pan": ["skillet", "wok"],
    "pot": ["saucepan", "casserole"], "wallet": ["purse", "billfold"], "cap": ["hat", "baseball hat"],
    "hat": ["cap", "beanie"], "jacket": ["coat", "windbreaker"], "hoodie": ["sweatshirt", "pullover"],
    "phone": ["cellphone", "mobile"], "mobile": ["cellphone", "phone"], "laptop": ["notebook computer", "pc"],
    "keyboard": ["keys", "typing board"], "mouse": ["pointer", "clicker"], "cream": ["lotion", "moisturizer"],
    "lotion": ["cream", "moisturizer"], "serum": ["essence", "ampoule"], "shampoo": ["hair wash", "hair soap"],
    "soap": ["body wash", "cleanser"], "perfume": ["fragrance", "scent"], "lipstick": ["lip color", "lip tint"],
    "kids": ["children", "little ones"], "baby": ["infant", "toddler"], "women": ["ladies", "girls"],
    "womens": ["ladies", "girls"], "men": ["guys", "gents"], "mens": ["guys", "gents"],
    "waterproof": ["water resistant", "rainproof"], "portable": ["handy", "travel size"],
    "wireless": ["cordless", "bluetooth"], "stainless": ["rustproof", "steel"], "heavy": ["sturdy", "tough"],
    "mini": ["small", "tiny"], "large": ["big", "huge"], "cute": ["adorable", "kawaii"],
}
_COLLOQUIAL = (
    "hi, i'm looking for {x} for my {who}{attr}{price}{service}",
    "need a good {x}{attr}{price}{service}, any ideas?",
    "what's a decent {x}{attr}{price}{service} pls",
    "something like {x}{attr} that i can use every day{price}{service}",
    "hey can you help me find {x}{attr}{price}{service}",
    "my {who} wants {x}{attr}{price}{service}",
)
_SHOPPINGBENCH = (
    "Looking for {x}{attr}{price}{service}.",
    "Show me {x}{attr}{service}{price}.",
    "Find {x}{attr}, {service_plain}{price}.",
    "I want to buy {x}{attr}{price}{service}.",
)
_WHO = ("mom", "dad", "sister", "brother", "son", "daughter", "wife", "husband", "friend", "office")
_SERVICE_PHRASE = {"freeShipping": "with free shipping", "COD": "with cash on delivery",
                   "official": "from LazMall", "flashsale": "with LazFlash deals"}
_COLOR_KEYS = ("color", "color_family", "colour")


@dataclass
class LongTailQuery:
    query: str
    gold_ids: list[str]
    style: str
    mined_rewrite: str = ""          # the product words the query was written from
    gold_title: str = ""
    price_min: float | None = None
    price_max: float | None = None
    services: list[str] = field(default_factory=list)
    source: str = "catalogue"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LongTailQuery:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def satisfied(self, product: dict[str, Any]) -> float:
        """Share of this query's price/service wishes a product meets (1.0 when it states none)."""
        checks: list[bool] = []
        price = float(product.get("price") or 0.0)
        if self.price_min is not None:
            checks.append(price >= self.price_min)
        if self.price_max is not None:
            checks.append(price <= self.price_max)
        offered = set(product.get("service") or [])
        checks.extend(s in offered for s in self.services)
        return sum(checks) / len(checks) if checks else 1.0


def _attribute_phrase(product: dict[str, Any], rng: random.Random) -> tuple[str, list[str]]:
    pairs = [(k, v[0]) for k, v in (product.get("attributes") or {}).items() if v and k != "brand" and v[0]]
    for option in (product.get("sku_options") or {}).values():
        pairs.extend((k, v) for k, v in option.items() if v)
    if not pairs:
        return "", []
    key, value = pairs[rng.randrange(len(pairs))]
    value = " ".join(str(value).lower().split()[:4])
    words = content_words(value)
    if key in _COLOR_KEYS:
        return f" in {value}", words
    label = key.replace("_", " ").lower()
    phrase = rng.choice((f" with {label} {value}", f" that is {value}", f", {value} {label} please"))
    return phrase, words


def _price_phrase(price: float, rng: random.Random) -> tuple[str, float | None, float | None]:
    roll = rng.random()
    if roll < 0.35:
        high = float(round(price * rng.uniform(1.1, 1.6)))
        return rng.choice((f" under {high:.0f} pesos", f", below {high:.0f} php", f" less than {high:.0f} PHP")), None, high
    if roll < 0.5:
        low = float(round(price * rng.uniform(0.5, 0.9)))
        return rng.choice((f" over {low:.0f} pesos", f" priced above {low:.0f} PHP")), low, None
    if roll < 0.6:
        low, high = float(round(price * 0.7)), float(round(price * 1.4))
        return f" between {low:.0f} and {high:.0f} pesos", low, high
    return "", None, None


class LongTailGenerator:
    def __init__(self, seed: int = 0, styles: tuple[str, ...] = STYLES):
        unknown = set(styles) - set(STYLES)
        if unknown:
            raise ValueError(f"unknown long-tail styles {sorted(unknown)}; known: {', '.join(STYLES)}")
        self.seed = seed
        self.styles = styles

    def from_product(self, product: dict[str, Any], index: int) -> LongTailQuery | None:
        rng = random.Random(f"{self.seed}:longtail:{index}:{product['product_id']}")
        words = content_words(product.get("title", ""))
        words = [w for w in words if not w.isdigit() and len(w) > 1]
        if len(words) < 2:
            return None
        style = self.styles[index % len(self.styles)]
        n = rng.randint(2, min(4, len(words)))
        start = rng.randrange(len(words) - n + 1)
        span = words[start: start + n]
        attr, attr_words = _attribute_phrase(product, rng)
        price, low, high = _price_phrase(float(product.get("price") or 0.0), rng)
        offered = [s for s in product.get("service") or [] if s in _SERVICE_PHRASE]
        services = [rng.choice(offered)] if offered and rng.random() < 0.4 else []
        service = f" {_SERVICE_PHRASE[services[0]]}" if services else ""

        shown = list(span)
        if style in ("paraphrase", "colloquial", "swap"):
            swaps = [i for i, w in enumerate(shown) if w in SHOPPER_WORDS]
            for i in swaps if style == "paraphrase" else swaps[:1]:
                shown[i] = rng.choice(SHOPPER_WORDS[shown[i]])
        if style == "drop" and len(shown) > 2:
            del shown[rng.randrange(len(shown))]
        if style == "swap":
            rng.shuffle(shown)
        if style == "attribute" and attr_words:
            shown = shown[:1]
            attr = f" {rng.choice(('that feels', 'which is', 'kind of'))} {' '.join(attr_words)}"
        x = " ".join(shown)
        if style == "shoppingbench":
            template = rng.choice(_SHOPPINGBENCH)
            text = template.format(x=x, attr=attr, price=price, service=service,
                                   service_plain=service.strip() or "any shop")
        else:
            text = rng.choice(_COLLOQUIAL).format(x=x, who=rng.choice(_WHO), attr=attr, price=price,
                                                   service=service)
        text = " ".join(text.replace(" ,", ",").split())
        mined = " ".join(dict.fromkeys(span + attr_words))
        return LongTailQuery(query=text, gold_ids=[str(product["product_id"])], style=style, mined_rewrite=mined,
                             gold_title=product.get("title", ""), price_min=low, price_max=high, services=services)

    def generate(self, products: list[dict[str, Any]], start_index: int = 0) -> list[LongTailQuery]:
        out = []
        for i, p in enumerate(products):
            q = self.from_product(p, start_index + i)
            if q is not None:
                out.append(q)
        return out
