"""The JSON bodies of the simulated Client Portal gateway, in the shapes of IBKR's examples."""

from __future__ import annotations

from typing import Any

from simulator.portal.state import Switches
from simulator.portfolio import SimPortfolio, SimPosition

PAGE_SIZE = 100
SERVER_INFO = {"serverName": "SimPortal1", "serverVersion": "Build 10.25.0p (sim)"}


def auth_body(sw: Switches) -> dict[str, Any]:
    authenticated = not sw.logged_out
    return {
        "authenticated": authenticated,
        "competing": sw.competing and authenticated,
        "connected": True,
        "established": authenticated,
        "fail": "",
        "message": "" if authenticated else "not authenticated",
        "MAC": "02:00:00:00:00:01",
        "hardware_info": "00000000|02:00:00:00:00:01",
        "serverInfo": SERVER_INFO,
    }


def account_obj(acct: str) -> dict[str, Any]:
    return {
        "id": acct,
        "PrepaidCrypto-Z": False,
        "PrepaidCrypto-P": False,
        "brokerageAccess": True,
        "accountId": acct,
        "accountVan": acct,
        "accountTitle": "Simulated Account",
        "displayName": "Simulated Account",
        "accountAlias": None,
        "accountStatus": 1590724800000,
        "currency": "USD",
        "type": "DEMO",
        "tradingType": "STKNOPT",
        "businessType": "IB_SALES",
        "ibEntity": "IBLLC-US",
        "faclient": False,
        "clearingStatus": "O",
        "covestor": False,
        "noClientTrading": False,
        "trackVirtualFXPortfolio": True,
        "acctCustType": "INDIVIDUAL",
        "parent": {
            "mmc": [],
            "accountId": "",
            "isMParent": False,
            "isMChild": False,
            "isMultiplex": False,
        },
        "desc": acct,
    }


def option_price(portfolio: SimPortfolio, pos: SimPosition, t: float) -> float:
    return portfolio.quote(pos, t).price if pos.is_option else portfolio.price(pos.symbol, t)


def gross_value(portfolio: SimPortfolio, t: float) -> float:
    return sum(
        abs(p.quantity * option_price(portfolio, p, t) * (p.multiplier if p.is_option else 1))
        for p in portfolio.positions
    )


def net_liquidation(gross: float) -> float:
    return 1_000_000.0 + 0.01 * gross


def pnl_entry(portfolio: SimPortfolio, t: float) -> dict[str, Any]:
    """One account's entry of /iserver/account/pnl/partitioned, its P&L computed as the gateway
    simulator computes it: unrealized = value - cost of every position, daily a tenth of that.
    No realized figure: the gateway's spec has none (rowType, dpl, nl, upl, el, mv)."""
    unrealized = sum(
        p.quantity * option_price(portfolio, p, t) * p.multiplier - p.quantity * p.avg_cost
        for p in portfolio.positions
    )
    net_liq = net_liquidation(gross_value(portfolio, t))
    return {
        "rowType": 1,
        "dpl": round(0.1 * unrealized, 2),
        "nl": round(net_liq, 2),
        "upl": round(unrealized, 2),
        "el": round(net_liq * 0.6, 2),
        "mv": 0.0,
    }


def position_row(
    portfolio: SimPortfolio, pos: SimPosition, t: float, with_secdef: bool
) -> dict[str, Any]:
    acct = portfolio.account
    und = portfolio.underlyings[pos.symbol]
    price = option_price(portfolio, pos, t)
    mult = pos.multiplier if pos.is_option else 1
    mkt_value = round(pos.quantity * price * mult, 2)
    avg_price = pos.avg_cost / mult if pos.is_option else pos.avg_cost
    avg_cost = pos.avg_cost
    row: dict[str, Any] = {
        "acctId": acct,
        "conid": pos.con_id,
        "contractDesc": desc(pos),
        "position": float(pos.quantity),
        "mktPrice": price,
        "mktValue": mkt_value,
        "currency": "USD",
        "avgCost": avg_cost,
        "avgPrice": avg_price,
        "realizedPnl": 0.0,
        "unrealizedPnl": round(mkt_value - pos.quantity * avg_cost, 2),
        "exchs": None,
        "expiry": None,
        "putOrCall": None,
        "multiplier": None,
        "strike": 0.0,
        "exerciseStyle": None,
        "conExchMap": [],
        "assetClass": pos.sec_type,
        "undConid": 0,
        "model": "",
    }
    if not with_secdef:
        return row
    if pos.is_option:
        strike = f"{pos.strike:g}"
        row.update(
            {
                "expiry": pos.expiry,
                "putOrCall": pos.right,
                "multiplier": float(mult),
                "strike": strike,
                "undConid": und.con_id,
                "undSym": pos.symbol,
                "undComp": f"{pos.symbol} (simulated)",
                "crossCurrency": False,
                "ticker": pos.symbol,
                "type": "",
                "hasOptions": False,
                "fullName": f"{pos.symbol} {pos.expiry} {strike} "
                f"{'Call' if pos.right == 'C' else 'Put'}",
                "lastTradingDay": pos.expiry,
            }
        )
    else:
        row.update(
            {
                "multiplier": 0.0,
                "strike": "0",
                "undConid": 0,
                "ticker": pos.symbol,
                "type": "ETF",
                "hasOptions": True,
                "fullName": pos.symbol,
                "group": "Equity",
                "sector": "Broad",
                "sectorGroup": "Index",
            }
        )
    row.update(
        {
            "incrementRules": [{"lowerEdge": 0.0, "increment": 0.01}],
            "displayRule": {
                "magnification": 0,
                "displayRuleStep": [{"decimalDigits": 2, "lowerEdge": 0.0, "wholeDigits": 4}],
            },
            "time": 26,
            "chineseName": None,
            "allExchanges": und.exchange,
            "listingExchange": und.exchange,
            "countryCode": "US",
            "name": pos.symbol,
            "isUS": True,
            "isEventContract": False,
            "pageSize": PAGE_SIZE,
        }
    )
    return row


def desc(pos: SimPosition) -> str:
    if not pos.is_option:
        return pos.symbol
    months = "JANFEBMARAPRMAYJUNJULAUGSEPOCTNOVDEC"
    month = months[(int(pos.expiry[4:6]) - 1) * 3 :][:3]
    return (
        f"{pos.symbol:<6} {month}{pos.expiry[:4]} {pos.strike:g} {pos.right} "
        f"[{pos.local_symbol} {pos.multiplier}]"
    )


def summary_body(account: str, gross: float, ms: int) -> dict[str, Any]:
    """/portfolio/{acct}/summary: net liquidation grows with the gross position value."""

    def money(amount: float) -> dict[str, Any]:
        return {
            "amount": round(amount, 2),
            "currency": "USD",
            "isNull": False,
            "timestamp": ms,
            "value": None,
            "severity": 0,
        }

    def text(value: str) -> dict[str, Any]:
        return {
            "amount": 0.0,
            "currency": None,
            "isNull": False,
            "timestamp": ms,
            "value": value,
            "severity": 0,
        }

    net_liq = net_liquidation(gross)
    return {
        "accountcode": text(account),
        "accountready": text("true"),
        "accounttype": text("INDIVIDUAL"),
        "netliquidation": money(net_liq),
        "netliquidation-s": money(net_liq),
        "availablefunds": money(net_liq * 0.6),
        "availablefunds-s": money(net_liq * 0.6),
        "grosspositionvalue": money(gross),
        "cushion": text("0.62"),
        "highestseverity": text("null"),
        "segmenttitle-s": text("US Securities"),
    }


def iserver_accounts_body(accounts: list[str], epoch: int) -> dict[str, Any]:
    """Every account of the login; the first is the one selected."""
    acct = accounts[0]
    return {
        "accounts": list(accounts),
        "acctProps": {
            a: {
                "hasChildAccounts": False,
                "supportsCashQty": True,
                "supportsFractions": True,
            }
            for a in accounts
        },
        "aliases": {a: a for a in accounts},
        "allowFeatures": {"snapshotRefreshTimeout": 30},
        "chartPeriods": {},
        "groups": ["All"],
        "profiles": [],
        "selectedAccount": acct,
        "serverInfo": SERVER_INFO,
        "sessionId": f"sim.{epoch:08x}",
        "isFT": False,
        "isPaper": True,
    }
