"""Read every knowledge file under a root, check it against its schema, then cross-link it.

Layout (relative to the root):
    guidelines/genes/<GENE>.yaml   gene tables            (GeneTable)
    guidelines/<source>/*.yaml     guidelines             (Guideline), e.g. guidelines/cpic/
    guidelines/dosing/*.yaml       dosing algorithms      (cds.dosing.models.DosingAlgorithm)
    rules/*.yaml                   local CDS policy       (RuleFile)
    hooks/*.yaml                   CDS Hooks services     (HookFile)
Other files under guidelines/ (fhir-mappings.yaml, rxnorm/*.tsv) belong to the FHIR reader.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cds.bundle import bundled_root
from cds.dosing.models import DosingAlgorithm
from cds.errors import CdsError, Diagnostic, KnowledgeError
from cds.genotype import GeneInterpreter
from cds.knowledge.models import GeneTable, Guideline, HookFile, HookService, Recommendation, Rule, RuleFile
from cds.knowledge.yamlsrc import SourceMap, YamlSourceError, load_yaml_file, load_yaml_text

DEFAULT_ROOT = bundled_root()


def default_root() -> Path:
    """The knowledge root when none is given: the bundled knowledge (cds.bundle). A face passes the
    configured one (CDS_KNOWLEDGE_DIR, cds.settings)."""
    return DEFAULT_ROOT


@dataclass(frozen=True)
class Origin:
    file: str
    path: tuple[Any, ...] = ()


@dataclass
class KnowledgeBase:
    root: Path
    version: str                                       # content hash of every knowledge file
    genes: dict[str, GeneTable]
    guidelines: dict[str, Guideline]
    rules: list[Rule]
    services: list[HookService]
    sources: dict[str, SourceMap] = field(repr=False)  # file → line map
    origins: dict[int, Origin] = field(repr=False)     # id(model) → where it was written
    interpreters: dict[str, GeneInterpreter] = field(default_factory=dict, repr=False)
    dosing: dict[str, DosingAlgorithm] = field(default_factory=dict)   # drug → its dosing algorithm
    notices: list[Diagnostic] = field(default_factory=list, repr=False)  # valid, but said by `cds validate`
    # (kind, file, SHA-256 of its bytes) in load order: what `version` is the digest of
    file_digests: list[tuple[str, str, str]] = field(default_factory=list, repr=False)
    rule_texts: dict[str, str] = field(default_factory=dict, repr=False)  # rules/*.yaml → its text as loaded

    def __getstate__(self) -> dict:
        # `origins` is keyed by id(), which means nothing in another process (an unpickled copy, the
        # knowledge cache, a dask worker): carry each described object itself, which pickle keeps identical.
        state = self.__dict__.copy()
        described = [*self.genes.values(), *self.guidelines.values(), *self.rules, *self.services,
                     *self.dosing.values(),
                     *(rec for g in self.guidelines.values() for rec in g.recommendations)]
        by_id = {id(obj): obj for obj in described}
        state["origins"] = [(by_id[key], origin) for key, origin in self.origins.items() if key in by_id]
        return state

    def __setstate__(self, state: dict) -> None:
        state["origins"] = {id(obj): origin for obj, origin in state["origins"]}
        self.__dict__.update(state)

    def where(self, obj: Any, *subpath: Any) -> tuple[str, int]:
        origin = self.origins[id(obj)]
        return origin.file, self.sources[origin.file].line(origin.path + subpath)

    def diag(self, obj: Any, message: str, *subpath: Any) -> Diagnostic:
        file, line = self.where(obj, *subpath)
        return Diagnostic(file, line, message)

    # Derived views the engine, cards and CLI need.
    def drugs(self) -> dict[str, list[Guideline]]:
        """Drug name → the guidelines that cover it. Built once per guidelines dict and size (cards ask
        for it on every hook call; building it took ~0.5 ms): read it, never change it."""
        cached = self.__dict__.get("_drugs_view")
        if cached is None or cached[0] is not self.guidelines or cached[1] != len(self.guidelines):
            out: dict[str, list[Guideline]] = {}
            for g in self.guidelines.values():
                for d in g.drugs:
                    out.setdefault(d.name, []).append(g)
            cached = self.__dict__["_drugs_view"] = (self.guidelines, len(self.guidelines), out)
        return cached[2]

    def recommendation_index(self) -> dict[str, tuple[Guideline, Recommendation]]:
        return {r.id: (g, r) for g in self.guidelines.values() for r in g.recommendations}


_KINDS = ("gene", "guideline", "dosing", "rules", "hooks")     # the load order of _files


def _files(root: Path) -> dict[str, list[Path]]:
    guidelines_dir = root / "guidelines"
    return {
        "gene": sorted((guidelines_dir / "genes").glob("*.yaml")),
        "guideline": sorted(p for p in guidelines_dir.glob("*/*.yaml") if p.parent.name not in ("genes", "dosing")),
        "dosing": sorted((guidelines_dir / "dosing").glob("*.yaml")),
        "rules": sorted((root / "rules").glob("*.yaml")),
        "hooks": sorted((root / "hooks").glob("*.yaml")),
    }


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith(("list[", "dict[", "literal[", "function-"))
                                        or part in ("str", "int")):
            continue  # pydantic's union/validator branch names mean nothing to an author
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _validate(model: type[BaseModel], data: Any, smap: SourceMap, diags: list[Diagnostic]) -> Any:
    if not isinstance(data, dict):
        diags.append(smap.diag((), f"expected a mapping at the top level, found {type(data).__name__}"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            loc = tuple(e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = f"unknown field '{loc[-1]}'"
            elif e["type"] == "missing":
                msg = f"required field '{loc[-1]}' is missing"
            diags.append(smap.diag(loc, f"{_format_loc(loc)}: {msg}"))
        return None


def _expand_prefetch(service: HookService, smap: SourceMap, path: tuple, diags: list[Diagnostic]) -> HookService | None:
    """The service with the `{{pgx.*}}` tokens of its prefetch templates expanded from the FHIR mappings
    (cds/knowledge/prefetch.py), or None (with a diagnostic) when a token is unknown or the mappings are broken."""
    if not any("{{" in t and "pgx." in t for t in service.prefetch.values()):
        return service
    from cds.fhir.mappings import default_mappings
    from cds.knowledge.prefetch import UnknownToken, expand_template

    try:
        mappings = default_mappings()
    except KnowledgeError as err:
        diags.extend(err.diagnostics)
        return None
    expanded = {}
    for key, template in service.prefetch.items():
        try:
            expanded[key] = expand_template(template, mappings)
        except UnknownToken as err:
            diags.append(smap.diag(path + ("prefetch", key), f"{_format_loc(path + ('prefetch', key))}: {err}"))
            return None
    return service.model_copy(update={"prefetch": expanded})


def load_knowledge(root: Path | None = None, *, cross_link: bool = True, use_cache: bool = True,
                   cache_dir: Path | None = None) -> KnowledgeBase:
    """Load, validate and cross-link the knowledge under `root`; raise KnowledgeError listing every fault.
    Knowledge that passed every check before, byte for byte under the same code, comes from the
    knowledge cache in `cache_dir` (cds.knowledge.cache; a face passes CoreSettings.knowledge_cache_dir(),
    None keeps no cache) unless `use_cache` is False (`cds validate` reads the files)."""
    root = Path(root) if root else default_root()
    if not (root / "guidelines").is_dir():
        raise CdsError(f"{root}: no guidelines/ folder here; point to the knowledge root (the folder holding "
                       "guidelines/, rules/ and hooks/)")
    if not (cross_link and use_cache) or cache_dir is None:
        return _load_files(root, cross_link=cross_link)
    from cds.fhir.mappings import DEFAULT_PATH as MAPPINGS
    from cds.knowledge.cache import cache_key, load_through_cache

    return load_through_cache(cache_dir, cache_key(root, (MAPPINGS,)), lambda: _load_files(root, cross_link=True))


def knowledge_version(file_digests: list[tuple[str, str, str]]) -> str:
    """The knowledge-base version: a digest of every file's name and content digest, in load order."""
    digest = hashlib.sha256()
    for _kind, name, sha in file_digests:
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()[:12]


def rules_files(root: Path) -> dict[str, str]:
    """The local policy on disk: rules/*.yaml → text."""
    return {path.relative_to(root).as_posix(): path.read_text(encoding="utf-8") for path in _files(root)["rules"]}


def _rule_models(name: str, text: str, sources: dict[str, SourceMap], diags: list[Diagnostic]) -> RuleFile | None:
    try:
        data, smap = load_yaml_text(text, name)
    except YamlSourceError as err:
        diags.extend(err.diagnostics)
        return None
    sources[name] = smap
    return _validate(RuleFile, data, smap, diags)


def with_rules(kb: KnowledgeBase, files: dict[str, str]) -> KnowledgeBase:
    """The same knowledge with its local policy replaced by `files` (rules/NAME.yaml → YAML text): the
    gene tables, guidelines and hooks are shared, the rules read, validated and cross-linked as
    `load_knowledge` does. Raises KnowledgeError listing every fault, with file and line."""
    diags: list[Diagnostic] = []
    for name in files:
        if not (name.startswith("rules/") and name.endswith(".yaml") and "/" not in name[len("rules/"):]):
            diags.append(Diagnostic(name, 1, "a policy file is rules/NAME.yaml"))
    if diags:
        raise KnowledgeError(diags)
    sources = {name: smap for name, smap in kb.sources.items() if not name.startswith("rules/")}
    origins = {key: origin for key, origin in kb.origins.items() if not origin.file.startswith("rules/")}
    rules: list[Rule] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for name in sorted(files):
        model = _rule_models(name, files[name], sources, diags)
        for i, rule in enumerate(model.rules if model else []):
            line = sources[name].line(("rules", i, "id"))
            if rule.id in first_seen:
                f0, l0 = first_seen[rule.id]
                diags.append(Diagnostic(name, line, f"duplicate rule id '{rule.id}' (first defined in {f0}:{l0})"))
                continue
            first_seen[rule.id] = (name, line)
            rules.append(rule)
            origins[id(rule)] = Origin(name, ("rules", i))
    digests = []                         # in load order, the rules' own in the place of the files'
    for kind in _KINDS:
        if kind == "rules":
            digests += [("rules", name, hashlib.sha256(files[name].encode()).hexdigest()) for name in sorted(files)]
        else:
            digests += [d for d in kb.file_digests if d[0] == kind]
    new = KnowledgeBase(root=kb.root, version=knowledge_version(digests), genes=kb.genes, guidelines=kb.guidelines,
                        rules=rules, services=kb.services, sources=sources, origins=origins, dosing=kb.dosing,
                        interpreters=kb.interpreters, file_digests=digests, rule_texts=dict(files))
    if not diags:
        from cds.knowledge.crosslink import cross_link as check
        from cds.knowledge.crosslink import notices
        diags.extend(check(new))
        new.notices = notices(new)
    if diags:
        raise KnowledgeError(diags)
    return new


def _load_files(root: Path, *, cross_link: bool) -> KnowledgeBase:
    diags: list[Diagnostic] = []
    sources: dict[str, SourceMap] = {}
    origins: dict[int, Origin] = {}
    file_digests: list[tuple[str, str, str]] = []
    rule_texts: dict[str, str] = {}
    genes: dict[str, GeneTable] = {}
    guidelines: dict[str, Guideline] = {}
    rules: list[Rule] = []
    services: list[HookService] = []
    first_seen: dict[tuple[str, str], Origin] = {}

    def unique(kind: str, key: str, origin: Origin) -> bool:
        seen = first_seen.get((kind, key))
        if seen:
            diags.append(Diagnostic(origin.file, sources[origin.file].line(origin.path),
                                    f"duplicate {kind} id '{key}' (first defined in "
                                    f"{seen.file}:{sources[seen.file].line(seen.path)})"))
            return False
        first_seen[(kind, key)] = origin
        return True

    dosing: dict[str, DosingAlgorithm] = {}
    schemas: dict[str, type[BaseModel]] = {"gene": GeneTable, "guideline": Guideline, "rules": RuleFile,
                                           "hooks": HookFile, "dosing": DosingAlgorithm}
    for kind, paths in _files(root).items():
        for path in paths:
            name = path.relative_to(root).as_posix()
            content = path.read_bytes()
            file_digests.append((kind, name, hashlib.sha256(content).hexdigest()))
            if kind == "rules":
                rule_texts[name] = content.decode("utf-8", errors="replace")
            try:
                data, smap = load_yaml_file(path, name)
            except YamlSourceError as err:
                diags.extend(err.diagnostics)
                continue
            sources[name] = smap
            model = _validate(schemas[kind], data, smap, diags)
            if model is None:
                continue
            if kind == "gene":
                if path.stem != model.gene:
                    diags.append(smap.diag(("gene",),
                                           f"gene '{model.gene}' is in a file named {path.name}; name it "
                                           f"{model.gene}.yaml"))
                if unique("gene", model.gene, Origin(name)):
                    genes[model.gene] = model
                    origins[id(model)] = Origin(name)
            elif kind == "guideline":
                if unique("guideline", model.id, Origin(name, ("id",))):
                    guidelines[model.id] = model
                    origins[id(model)] = Origin(name)
                    for i, rec in enumerate(model.recommendations):
                        origins[id(rec)] = Origin(name, ("recommendations", i))
                        unique("recommendation", rec.id, Origin(name, ("recommendations", i, "id")))
            elif kind == "dosing":
                if unique("dosing algorithm", model.id, Origin(name, ("id",))) and \
                        unique("dosing algorithm for drug", model.drug, Origin(name, ("drug",))):
                    dosing[model.drug] = model
                    origins[id(model)] = Origin(name)
            elif kind == "rules":
                for i, rule in enumerate(model.rules):
                    origin = Origin(name, ("rules", i))
                    if unique("rule", rule.id, Origin(name, ("rules", i, "id"))):
                        rules.append(rule)
                        origins[id(rule)] = origin
            else:
                for i, service in enumerate(model.services):
                    service = _expand_prefetch(service, smap, ("services", i), diags)
                    if service is None:
                        continue
                    if unique("service", service.id, Origin(name, ("services", i, "id"))):
                        services.append(service)
                        origins[id(service)] = Origin(name, ("services", i))

    kb = KnowledgeBase(root=root, version=knowledge_version(file_digests), genes=genes, guidelines=guidelines,
                       rules=rules, services=services, sources=sources, origins=origins, dosing=dosing,
                       file_digests=file_digests, rule_texts=rule_texts)
    kb.interpreters = {name: GeneInterpreter(table) for name, table in genes.items()}
    # Cross-file checks only make sense once every file reads: a gene table with a syntax error
    # would otherwise show up as hundreds of "unknown gene" errors in the guidelines.
    if cross_link and not diags:
        from cds.knowledge.crosslink import cross_link as check
        from cds.knowledge.crosslink import notices
        diags.extend(check(kb))
        kb.notices = notices(kb)
    if diags:
        raise KnowledgeError(diags)
    return kb
