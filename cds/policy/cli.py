"""`cds policy …` (propose, impact, approve, reject, history, rollback, export) and `cds user …`
(accounts and roles), attached to the main CLI by `register(subparsers)`. Each names the person acting
(`--author`, `--approver`, `--by`), who must hold an account with the role the step needs."""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from cds.errors import CdsError

URL_HELP = "default: $DATABASE_URL, else sqlite:///./var/pgx-cds.sqlite3"


def register(subparsers) -> None:
    _register_policy(subparsers)
    _register_user(subparsers)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", metavar="URL", help=URL_HELP)
    p.add_argument("--knowledge", help="knowledge root whose guidelines the policy is checked against "
                                       "(default: $CDS_KNOWLEDGE_DIR, else the bundled knowledge)")


def _register_policy(subparsers) -> None:
    policy = subparsers.add_parser("policy", help="govern the local policy (rules/): propose, impact, approve, "
                                                  "history, rollback, export")
    sub = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)

    p = sub.add_parser("propose", help="propose replacing rules/ files; refused with file:line unless valid and tested")
    p.add_argument("files", nargs="+", metavar="FILE", help="a whole rules/NAME.yaml file (its name says which)")
    p.add_argument("--author", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true", help="print the proposal as one JSON object (its `id`)")
    _common(p)
    p.set_defaults(func=_propose)

    p = sub.add_parser("impact", help="cards the proposal would add, remove or change, per drug and rule")
    p.add_argument("version", type=int)
    p.add_argument("--patients", type=int, help="how many patients to decide (default 500)")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=_impact)

    p = sub.add_parser("approve", help="sign off a proposal (not its author); it becomes active at once or --at")
    p.add_argument("version", type=int)
    p.add_argument("--approver", required=True)
    p.add_argument("--comment")
    p.add_argument("--at", type=_moment, metavar="DATETIME", help="activate at this time (ISO 8601, UTC if no zone)")
    _common(p)
    p.set_defaults(func=_approve)

    p = sub.add_parser("reject", help="turn a proposal down, with a comment")
    p.add_argument("version", type=int)
    p.add_argument("--approver", required=True)
    p.add_argument("--comment", required=True)
    _common(p)
    p.set_defaults(func=_reject)

    p = sub.add_parser("history", help="every version: author, approver, reasons, times, diff to its predecessor")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=_history)

    p = sub.add_parser("rollback", help="make an earlier active version active again (default: the previous one)")
    p.add_argument("version", type=int, nargs="?")
    p.add_argument("--by", required=True)
    p.add_argument("--reason", required=True)
    _common(p)
    p.set_defaults(func=_rollback)

    p = sub.add_parser("export", help="write the active version's rules/ files under DIR (to commit to git)")
    p.add_argument("directory", metavar="DIR")
    _common(p)
    p.set_defaults(func=_export)


def _register_user(subparsers) -> None:
    user = subparsers.add_parser("user", help="workbench accounts and roles (viewer, author, approver, admin)")
    sub = user.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    p = sub.add_parser("add", help="add an account; the password is read from standard input (never an argument)")
    p.add_argument("username")
    p.add_argument("--role", required=True)
    p.add_argument("--name", help="display name")
    p.add_argument("--sso", metavar="ISSUER", help="an account that signs in through this OpenID Connect issuer "
                                                    "(no password)")
    _common(p)
    p.set_defaults(func=_user_add)
    p = sub.add_parser("role", help="change an account's role")
    p.add_argument("username")
    p.add_argument("role")
    _common(p)
    p.set_defaults(func=_user_role)
    for name, disabled in (("disable", True), ("enable", False)):
        p = sub.add_parser(name, help=f"{name} an account")
        p.add_argument("username")
        _common(p)
        p.set_defaults(func=lambda args, d=disabled: _user_disable(args, d))
    p = sub.add_parser("password", help="set an account's password (read from standard input)")
    p.add_argument("username")
    _common(p)
    p.set_defaults(func=_user_password)
    p = sub.add_parser("list", help="every account and its role")
    _common(p)
    p.set_defaults(func=_user_list)


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _governance(args):
    from cds.policy.workflow import Governance

    settings = args.settings                       # read once by the command line
    knowledge = Path(args.knowledge) if args.knowledge else settings.knowledge_dir
    return Governance.open(args.database_url, knowledge, cache_dir=settings.knowledge_cache_dir())


def _operator() -> str:
    """Who runs an account command from the shell (account changes are recorded with who made them)."""
    return f"cli:{getpass.getuser()}"


# --- policy --------------------------------------------------------------------------------------

def _propose(args) -> int:
    changed = {}
    for name in args.files:
        path = Path(name)
        if path.suffix != ".yaml":
            raise CdsError(f"{name}: a policy file is a rules/NAME.yaml file")
        try:
            changed[f"rules/{path.name}"] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CdsError(f"{name}: cannot read it ({err})") from None
    gov = _governance(args)
    try:
        number = gov.propose(changed, args.author, args.reason)
        version = gov.store.version(number)
    finally:
        gov.close()
    if args.json:
        print(json.dumps({"id": number, "version": number, "status": version.status, "author": version.author,
                          "reason": version.reason, "base_version": version.base_version,
                          "files": sorted(changed)}))
    else:
        print(f"proposed version {number} (against active version {version.base_version}); an approver other "
              f"than {version.author} signs it off: cds policy approve {number} --approver NAME")
    return 0


def _impact(args) -> int:
    from cds.policy.workflow import impact

    gov = _governance(args)
    try:
        result, active = impact(gov, args.version, args.patients)
    finally:
        gov.close()
    if args.json:
        print(json.dumps({"version": args.version, "active_version": active, **result.as_json()}, indent=2))
        return 0
    total = result.total
    print(f"version {args.version} against active version {active}, over {result.cohort}: {result.orders} orders")
    print(f"cards added {total['added']}, removed {total['removed']}, changed {total['changed']}")
    for change in result.changes:
        print(f"  {change.kind:8} {change.count:6}  {change.drug} ({change.rule})")
        for example in change.examples:
            before = (example["before"] or {}).get("summary", "no card")
            after = (example["after"] or {}).get("summary", "no card")
            print(f"      {example['results'] or 'no result'}: {before!r} → {after!r}")
    return 0


def _approve(args) -> int:
    gov = _governance(args)
    try:
        version = gov.approve(args.version, args.approver, args.comment, args.at)
    finally:
        gov.close()
    event = version.event("activate")
    when = event.effective_at.isoformat() if event and event.effective_at else "now"
    print(f"version {args.version} approved by {args.approver}; active from {when} (every worker takes it up "
          "within seconds)")
    return 0


def _reject(args) -> int:
    gov = _governance(args)
    try:
        gov.reject(args.version, args.approver, args.comment)
    finally:
        gov.close()
    print(f"version {args.version} rejected by {args.approver}")
    return 0


def _rollback(args) -> int:
    gov = _governance(args)
    try:
        to = gov.rollback(args.by, args.reason, args.version)
    finally:
        gov.close()
    print(f"version {to} is active again (rolled back by {args.by})")
    return 0


def _export(args) -> int:
    gov = _governance(args)
    try:
        number, written = gov.export(Path(args.directory))
    finally:
        gov.close()
    print(f"active version {number} written: " + ", ".join(str(p) for p in written))
    return 0


def _history(args) -> int:
    from cds.policy.history import history_json, history_text

    gov = _governance(args)
    try:
        items = gov.store.history()
        active = gov.store.active()
    finally:
        gov.close()
    data = history_json(items, active.version if active else None)
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else history_text(data))
    return 0


# --- users ---------------------------------------------------------------------------------------

def _password_from_stdin() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def _user_add(args) -> int:
    gov = _governance(args)
    try:
        if args.sso:
            gov.accounts.add(args.username, args.role, _operator(), display_name=args.name, oidc=(args.sso, None))
        else:
            gov.accounts.add(args.username, args.role, _operator(), password=_password_from_stdin(),
                             display_name=args.name)
    finally:
        gov.close()
    print(f"account {args.username} added as {args.role}")
    return 0


def _user_role(args) -> int:
    gov = _governance(args)
    try:
        gov.accounts.set_role(args.username, args.role, _operator())
    finally:
        gov.close()
    print(f"{args.username} is now {args.role}")
    return 0


def _user_disable(args, disabled: bool) -> int:
    gov = _governance(args)
    try:
        gov.accounts.set_disabled(args.username, disabled, _operator())
    finally:
        gov.close()
    print(f"{args.username} {'disabled' if disabled else 'enabled'}")
    return 0


def _user_password(args) -> int:
    gov = _governance(args)
    try:
        gov.accounts.set_password(args.username, _password_from_stdin(), _operator())
    finally:
        gov.close()
    print(f"password of {args.username} changed; their sessions are closed")
    return 0


def _user_list(args) -> int:
    gov = _governance(args)
    try:
        accounts = gov.accounts.all()
    finally:
        gov.close()
    for a in accounts:
        print(f"{a.username:24} {a.role:9} {'disabled' if a.disabled else ''}{' sso' if a.oidc_issuer else ''}")
    return 0
