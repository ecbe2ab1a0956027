"""Sample built-ins for the retail demo agent: order look-ups on a bundled SAMPLE data file.

Owns: `lookup_order` and `list_caller_orders`, which read config/sample_data/orders.json (or
the file the tool's `config.data_file` names, relative to the agent file). The data is sample
data, for demos and tests; a real deployment asks its order system through a webhook tool.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from relay.tools.context import ToolContext
from relay.tools.registry import builtin, refuse_unknown_keys

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "config" / "sample_data" / "orders.json"
SUMMARY_KEYS = ("order_number", "placed", "status", "total", "currency")


def _data_config(config: dict, base_dir: Path) -> dict:
    refuse_unknown_keys(config, ("data_file",))
    name = config.get("data_file")
    if name is None:
        path = DEFAULT_DATA
    elif isinstance(name, str) and name:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
    else:
        raise ValueError("'config.data_file' must be a path (relative to the agent file)")
    path = path.resolve()
    load_orders(str(path))
    return {"data_file": str(path)}


@functools.lru_cache(maxsize=8)
def load_orders(path: str) -> dict[str, dict]:
    """Orders by number from a sample data file (ValueError saying what is wrong)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the order data {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    orders = data.get("orders") if isinstance(data, dict) else None
    if not isinstance(orders, list) or not all(
            isinstance(o, dict) and isinstance(o.get("order_number"), str) for o in orders):
        raise ValueError(f"{path}: must hold {{\"orders\": [{{\"order_number\": \"...\", ...}}]}}")
    return {o["order_number"]: o for o in orders}


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@builtin("lookup_order",
         description="Look up an order by its number: status, items, delivery, refund.",
         parameters={"type": "object", "additionalProperties": False,
                     "required": ["order_number"],
                     "properties": {"order_number": {
                         "type": "string", "description": "The order number, digits only."}}},
         prepare=_data_config)
def lookup_order(ctx: ToolContext, args: dict) -> dict:
    number = _digits(args["order_number"])
    order = load_orders(ctx.config["data_file"]).get(number)
    if order is None:
        return {"found": False, "order_number": number,
                "message": f"There is no order number {number or args['order_number']!r}."}
    return {"found": True, "order": order}


@builtin("list_caller_orders",
         description="The orders placed from the phone number the caller is calling from.",
         prepare=_data_config)
def list_caller_orders(ctx: ToolContext, args: dict) -> dict:
    caller = _digits(ctx.caller_number)
    orders = [{k: o[k] for k in SUMMARY_KEYS if k in o}
              for o in load_orders(ctx.config["data_file"]).values()
              if _same_number(caller, _digits(str(o.get("phone", ""))))]
    return {"caller_number": ctx.caller_number, "orders": orders}


def _same_number(a: str, b: str) -> bool:
    """Digits of two phone numbers, one maybe with a country or trunk prefix (+1, 0...)."""
    if not a or not b:
        return False
    if min(len(a), len(b)) < 7:
        return a == b
    return a.endswith(b) or b.endswith(a)
