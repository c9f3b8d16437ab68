"""Governance of the local CDS policy (rules/*.yaml): versions in the database, proposed by an author,
their impact shown, signed off by a second pharmacist, taken up by every worker without a restart,
rolled back when needed. Accounts and roles for the people who do it.

    store.py      policy versions and the governance log in the database (DATABASE_URL)
    accounts.py   accounts, roles, password hashes, sessions
    review.py     what a proposal must pass: validation with file:line, the rules' test cases
    workflow.py   propose, approve, reject, roll back (who may do what; every step recorded)
    impact.py     proposed vs active policy over the same patients: cards added, removed, changed
    active.py     the policy a process serves, and the watcher that swaps in a newly active version
    cli.py        `cds policy …` and `cds user …`

The CLI and the workbench are faces over workflow/impact; the service holds an `active.PolicyHolder`.
"""
