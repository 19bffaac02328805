"""The bad-recipe corpus: every way a recipe can be wrong, with the exact error expected.

Each case is generated here (nothing is committed as a file) and written to ``tmp_path``. The
expected text is what ``mastpipe validate`` prints for the file: one line
``FILE:LINE:COL: field.path: message`` per problem, each followed by ``  hint: ...``; ``{f}``
stands for the file's path. ``tests/e2e/test_validate_cli.py`` runs the same corpus through the
command line.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mastpipe.errors import RecipeError
from mastpipe.recipe.models import Recipe, load_recipe, parse_recipe
from mastpipe.recipe.yamlload import load_yaml_text

#: A valid recipe's first six lines; cases append to it, so their errors are on line 7 or later.
BASE = "version: 1\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n"
#: BASE plus the start of a position (line 7), for position cases.
POS = BASE + "    position:\n"
#: Billion laughs: ten levels of nine aliases each, 9**10 (3.5e9) strings once expanded.
BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}" if i else '"lol"'] * 9) + "]\n"
    for i in range(10))

SECRET_HINT = "  hint: never put tokens in recipes: set the environment variable MAST_API_TOKEN or run `mastpipe login`"
TAG_HINT = "  hint: recipes are plain data and nothing in them executes: remove the tag"
SYNTAX = "<recipe>: invalid YAML: "
RADIUS_HINT = '  hint: radius: search radius with a unit: "0.2 deg", "5 arcmin", "30 arcsec"'
COORD_HINT = '  hint: coordinates: ICRS position: "83.633 22.0145" (degrees), "05h34m31.9s +22d00m52s" or [ra, dec]'
LAYOUT_HINT = ('  hint: layout: astroquery: mastDownload/<obs_collection>/<obs_id>/<file>, as astroquery writes '
               'it (so earlier manual downloads are adopted); flat: <file>; or a template of product columns '
               'such as "{obs_collection}/{proposal_id}/{productFilename}"')


def QUOTE_HINT(raw: str) -> str:  # noqa: N802 - reads like the other hint constants
    return f'  hint: quote it ("{raw}") if you mean the text; YAML reads unquoted yes/no, on/off and true/false as booleans'


PLACEHOLDERS_HINT = (
    "  hint: placeholders are product columns in braces: {calib_level}, {dataRights}, {dataURI}, {dataproduct_type}, "
    "{description}, {obsID}, {obs_collection}, {obs_id}, {parent_obsid}, {productDocumentationURL}, {productFilename}, "
    "{productGroupDescription}, {productSubGroupDescription}, {productType}, {project}, {proposal_id}, {prvversion}, "
    "{size}, {type}; write {{ or }} for a literal brace")
RANGE_HINT = "  hint: a range is {min: ..., max: ...}; either end may be left out"
OCTAL_WHY = "YAML 1.1 reads an integer with a leading 0 as octal"
UNDERSCORE_WHY = "YAML 1.1 drops underscores from numbers (editors, reading YAML 1.2, see text)"
SPECIAL_WHY = "YAML reads unquoted .inf and .nan as infinity and NaN"


@dataclass(frozen=True)
class Bad:
    """One bad recipe: its content (``{marker}`` replaced by a path) and the exact output expected."""

    id: str
    content: str | bytes | None
    expected: tuple[str, ...]
    kind: str = "file"  # "file", "directory" or "missing"

    def make(self, directory: Path) -> Path:
        path = directory / f"{self.id}.yaml"
        if self.kind == "directory":
            path.mkdir()
        elif self.kind == "file":
            content = self.content
            if isinstance(content, str):
                content = content.replace("{marker}", str(directory / "MARKER")).encode()
            assert isinstance(content, bytes)
            path.write_bytes(content)
        return path

    def output(self, path: Path) -> str:
        """What ``mastpipe validate`` prints on stderr for this file (without the final newline)."""
        return "\n".join(line.replace("{f}", str(path)) for line in self.expected)


def _bad(id: str, content: str | bytes | None, *expected: str, kind: str = "file") -> Bad:
    return Bad(id, content, expected, kind)


CORPUS: list[Bad] = [
    # ---- YAML syntax ---------------------------------------------------------------------------
    _bad("syntax-unclosed-list", "version: 1\nname: [unclosed\n",
         "{f}:3:1: " + SYNTAX + "expected ',' or ']', but got the end of the file "
         "(while parsing a flow sequence started at line 2)",
         "  hint: close the list with ] (or quote a value containing , [ or ])"),
    _bad("syntax-unclosed-quote", 'version: 1\nname: "unterminated\n',
         "{f}:3:1: " + SYNTAX + "found unexpected end of the file (while scanning a quoted scalar started at line 2)",
         "  hint: close the quote: the string runs to the end of the file"),
    _bad("syntax-bad-indentation", "version: 1\n  name: x\n",
         "{f}:2:7: " + SYNTAX + "mapping values are not allowed here",
         "  hint: a value containing ': ' must be quoted, or a key is indented too far"),
    _bad("syntax-colon-in-value", "version: 1\nname: t\ndescription: a: b\n",
         "{f}:3:15: " + SYNTAX + "mapping values are not allowed here",
         "  hint: a value containing ': ' must be quoted, or a key is indented too far"),
    _bad("syntax-missing-colon", "version: 1\nname: t\nquery\n  q: 1\n",
         "{f}:4:4: " + SYNTAX + "could not find expected ':' (while scanning a simple key started at line 3)",
         "  hint: a key needs a colon after it, or a line continues a value by mistake"),
    _bad("syntax-undefined-alias", "version: 1\nname: *nope\n",
         "{f}:2:7: " + SYNTAX + "found undefined alias 'nope'",
         "  hint: define the anchor (&name) before using the alias (*name)"),
    _bad("syntax-reserved-character", "version: 1\nname: @me\n",
         "{f}:2:7: " + SYNTAX + "found character '@' that cannot start any token (while scanning for the next token)",
         "  hint: quote the value: YAML reserves @ and ` at the start of a value"),
    _bad("tab-indentation", "version: 1\nquery:\n\tq: 1\n",
         "{f}:3:1: <recipe>: a tab character is used for indentation",
         "  hint: YAML indents with spaces only; replace the tab with spaces"),
    _bad("multiple-documents", BASE + "---\nversion: 1\n",
         "{f}:7:1: <recipe>: the file holds more than one YAML document",
         "  hint: a recipe is one document: remove the extra `---`"),
    _bad("nul-character", "version: 1\nname: a\x00b\n",
         "{f}:2:8: <recipe>: the control character U+0000 is not allowed in YAML",
         "  hint: remove it; recipes are plain text"),
    # ---- not a mapping ------------------------------------------------------------------------
    _bad("empty-file", "",
         "{f}: <recipe>: the file is empty (or holds only comments)",
         "  hint: a recipe needs at least `version: 1`, `name` and `query`"),
    _bad("comments-and-whitespace-only", "# a comment\n\n   \n# another\n",
         "{f}: <recipe>: the file is empty (or holds only comments)",
         "  hint: a recipe needs at least `version: 1`, `name` and `query`"),
    _bad("top-level-list", "- version: 1\n- name: t\n",
         "{f}:1:1: <recipe>: a recipe is a mapping of sections, not a list",
         "  hint: start with `version: 1` and `name: ...` at the top level"),
    _bad("top-level-scalar", "just some text\n",
         "{f}:1:1: <recipe>: a recipe is a mapping of sections, not text",
         "  hint: start with `version: 1` and `name: ...` at the top level"),
    _bad("top-level-null", "~\n",
         "{f}:1:1: <recipe>: a recipe is a mapping of sections, not nothing (null)",
         "  hint: start with `version: 1` and `name: ...` at the top level"),
    # ---- keys ---------------------------------------------------------------------------------
    _bad("duplicate-top-level-key", BASE + "name: u\n",
         "{f}:7:1: name: duplicate key 'name' (first at line 2)",
         "  hint: YAML would silently keep only the last one: remove or rename one"),
    _bad("duplicate-nested-key", BASE + "      obs_collection: HST\n",
         "{f}:7:7: query.q.criteria.obs_collection: duplicate key 'obs_collection' (first at line 6)",
         "  hint: YAML would silently keep only the last one: remove or rename one"),
    _bad("non-text-key-yes", BASE + "yes: 1\n",
         "{f}:7:1: <recipe>: the key yes is not text: YAML reads it as True",
         "  hint: quote it ('yes':); YAML reads yes/no/on/off as booleans and digits as numbers"),
    _bad("non-text-key-list", BASE + "? [a, b]\n: 1\n",
         "{f}:7:3: <recipe>: a key must be text, not a list",
         "  hint: write keys as plain words followed by a colon"),
    # ---- unsafe tags, bombs -------------------------------------------------------------------
    _bad("unsafe-python-object-apply", "version: 1\nname: !!python/object/apply:os.system ['touch {marker}']\n",
         "{f}:2:7: name: the tag '!!python/object/apply:os.system' is not allowed", TAG_HINT),
    _bad("unsafe-python-object-new-as-key", "version: 1\n!!python/object/new:os.system ['touch {marker}']: x\n",
         "{f}:2:1: <recipe>: the tag '!!python/object/new:os.system' is not allowed", TAG_HINT),
    _bad("unsafe-python-name", "version: 1\nname: !!python/name:os.system\n",
         "{f}:2:7: name: the tag '!!python/name:os.system' is not allowed", TAG_HINT),
    _bad("unsafe-custom-tag", "version: 1\nname: !foo bar\n",
         "{f}:2:7: name: the tag '!foo' is not allowed", TAG_HINT),
    _bad("newline-in-a-key-and-a-value", BASE + '"bo\\ngus": 1\nretrieve:\n  layout: "{a\\nb}/{productFilename}"\n',
         "{f}:7:1: bo\\ngus: unknown key 'bo\\ngus'",
         "  hint: allowed keys here: description, expect, filter, mast, name, products, query, retrieve, state, unique, version",
         "{f}:9:11: retrieve.layout: unknown product column {a\\nb} in layout", PLACEHOLDERS_HINT),
    _bad("bad-bool-tag", "version: 1\nname: !!bool maybe\n",
         "{f}:2:7: name: cannot read 'maybe' as !!bool",
         "  hint: remove the !!bool tag or write a value it accepts"),
    _bad("alias-bomb", BOMB,
         "{f}:6:4: <recipe>: aliases expand to more than 100,000 values",
         "  hint: this looks like an alias bomb; write the values out instead"),
    _bad("recursive-alias", "version: 1\nname: &a [*a]\n",
         "{f}:2:7: <recipe>: an alias refers to a value that contains it (a recursive structure)",
         "  hint: recipes are trees: write the value out instead of the alias"),
    _bad("deep-nesting", "version: 1\nname: " + "[" * 200 + "]" * 200 + "\n",
         "{f}:2:142: <recipe>: values are nested more than 64 levels deep",
         "  hint: a recipe nests a few levels: look for unclosed [ or { brackets"),
    _bad("deeper-than-the-parser-can-go", "version: 1\nname: " + "[" * 5000 + "]" * 5000 + "\n",
         "{f}:2:{deep}: <recipe>: values are nested more than 64 levels deep",
         "  hint: a recipe nests a few levels: look for unclosed [ or { brackets"),
    # ---- files --------------------------------------------------------------------------------
    _bad("not-utf8", b"version: 1\nname: caf\xe9\n",
         "{f}:2:10: <recipe>: is not valid UTF-8 (byte 0xe9)", "  hint: save the file as UTF-8"),
    _bad("utf16", "version: 1\n".encode("utf-16"),
         "{f}:1:1: <recipe>: is not valid UTF-8 (byte 0xff)", "  hint: save the file as UTF-8"),
    _bad("directory", None,
         "{f}: <recipe>: is a directory, not a recipe file",
         "  hint: pass the path of a .yaml file inside it", kind="directory"),
    _bad("missing-file", None,
         "{f}: <recipe>: no such file",
         "  hint: check the path; a shell pattern that matches nothing is passed on unexpanded", kind="missing"),
    # ---- wrong types --------------------------------------------------------------------------
    _bad("type-number-expected", BASE + "mast:\n  timeout: soon\n",
         "{f}:8:12: mast.timeout: must be a number, not 'soon'",
         "  hint: timeout: seconds to wait for one request before retrying it"),
    _bad("type-mapping-expected", BASE + "retrieve: download\n",
         "{f}:7:11: retrieve: must be a mapping of keys to values, not 'download'",
         "  hint: retrieve: what happens to the products kept"),
    _bad("type-list-expected", BASE + "filter:\n  contains: _uncal.fits\n",
         "{f}:8:13: filter.contains: must be a list, e.g. [a, b], not '_uncal.fits'",
         "  hint: contains: keep products whose file name contains any of these (the seed's prodList), "
         "e.g. [_uncal.fits]"),
    _bad("type-query-not-mapping", "version: 1\nname: t\nquery:\n  q: JWST\n",
         "{f}:4:6: query.q: must be a mapping of keys to values, not 'JWST'",
         "  hint: each search is a mapping with `criteria:` and, optionally, `position:`"),
    _bad("type-text-expected", "version: 1\nname: [a, b]\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:2:7: name: must be text, not a list",
         "  hint: name: short identifier (letters, digits, . _ -); names the state directory"),
    _bad("type-literal", BASE + "retrieve:\n  mode: wget\n",
         "{f}:8:9: retrieve.mode: must be 'download', 'curl' or 'manifest', not 'wget'",
         "  hint: mode: download: mastpipe fetches, verifies and resumes the files itself; curl: write a bash "
         "script of curl commands to run later or elsewhere; manifest: only list URLs, paths and sizes"),
    _bad("type-below-minimum", BASE + "products:\n  batch_size: 0\n",
         "{f}:8:15: products.batch_size: must be at least 1, not 0",
         "  hint: batch_size: observations per product-list request"),
    _bad("type-above-maximum", BASE + "mast:\n  max_in_flight: 64\n",
         "{f}:8:18: mast.max_in_flight: must be at most 16, not 64",
         "  hint: max_in_flight: most requests to MAST's search API (queries and product lists) in flight at once"),
    _bad("type-true-for-a-number", BASE + "products:\n  batch_size: true\n",
         "{f}:8:15: products.batch_size: must be a number, not true",
         "  hint: batch_size: observations per product-list request"),
    _bad("type-bool-expected", BASE + "filter:\n  mrp_only: sometimes\n",
         "{f}:8:13: filter.mrp_only: must be true or false, not 'sometimes'",
         "  hint: mrp_only: keep only MAST's Minimum Recommended Products"),
    _bad("type-criterion-null", BASE + "      proposal_id:\n",
         "{f}:7:19: query.q.criteria.proposal_id: proposal_id has no value",
         "  hint: give a value or a list of values, or remove the field"),
    _bad("type-criterion-nested-list", BASE + "      proposal_id: [[1073]]\n",
         "{f}:7:20: query.q.criteria.proposal_id: proposal_id: a list holds values (text or numbers), not a list",
         "  hint: write proposal_id: [a, b] for any of several values"),
    _bad("bad-unique-key", BASE + "unique:\n  key: obsid\n",
         "{f}:8:8: unique.key: must be 'productFilename' or 'dataURI', not 'obsid'",
         "  hint: key: deduplicate on productFilename (the seed tutorial's choice) or dataURI"),
    # ---- YAML 1.1 booleans and nulls where text belongs ---------------------------------------
    _bad("bool-criterion-no", BASE + "      target_name: NO\n",
         '{f}:7:20: query.q.criteria.target_name: NO was read as the boolean false, not text', QUOTE_HINT("NO")),
    _bad("bool-criterion-yes-collection", "version: 1\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: yes\n",
         '{f}:6:23: query.q.criteria.obs_collection: yes was read as the boolean true, not text', QUOTE_HINT("yes")),
    _bad("bool-criterion-in-a-list", BASE + "      target_name: [M31, off, true]\n",
         '{f}:7:26: query.q.criteria.target_name[1]: off was read as the boolean false, not text', QUOTE_HINT("off"),
         '{f}:7:31: query.q.criteria.target_name[2]: true is a boolean, not text', QUOTE_HINT("true")),
    _bad("bool-filter-text-column", BASE + "filter:\n  columns:\n    dataRights: NO\n",
         '{f}:9:17: filter.columns.dataRights: NO was read as the boolean false, not text', QUOTE_HINT("NO")),
    _bad("bool-filter-number-column", BASE + "filter:\n  columns:\n    calib_level: [2, on]\n",
         '{f}:9:22: filter.columns.calib_level[1]: on was read as the boolean true, not a number',
         "  hint: write a number here; YAML reads unquoted yes/no, on/off and true/false as booleans"),
    _bad("bool-name", "version: 1\nname: NO\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         '{f}:2:7: name: NO was read as the boolean false, not text', QUOTE_HINT("NO")),
    _bad("bool-in-a-list-of-suffixes", BASE + "filter:\n  endswith: [_cal.fits, off]\n",
         '{f}:8:25: filter.endswith[1]: off was read as the boolean false, not text', QUOTE_HINT("off")),
    _bad("bool-layout-and-destination", BASE + "retrieve:\n  layout: flat\n  destination: no\n  script: yes\n",
         '{f}:9:16: retrieve.destination: no was read as the boolean false, not text', QUOTE_HINT("no"),
         '{f}:10:11: retrieve.script: yes was read as the boolean true, not text', QUOTE_HINT("yes")),
    _bad("bool-radius", POS + "      object: M1\n      radius: yes\n",
         '{f}:9:15: query.q.position.radius: yes was read as the boolean true, not text', QUOTE_HINT("yes")),
    _bad("bool-coordinates", POS + "      coordinates: off\n",
         '{f}:8:20: query.q.position.coordinates: off was read as the boolean false, not text', QUOTE_HINT("off")),
    _bad("bool-scheduler", BASE + "retrieve:\n  executor: {kind: dask, scheduler: on}\n",
         '{f}:8:37: retrieve.executor.scheduler: on was read as the boolean true, not text', QUOTE_HINT("on")),
    _bad("bool-for-a-choice", BASE + "retrieve:\n  verify: off\n",
         "{f}:8:11: retrieve.verify: must be 'size' or 'sha256', not off (YAML reads it as false)",
         "  hint: verify: how a rerun checks files it already has: size (fast, no reading) or sha256 (re-hash every "
         "file and repair mismatches)"),
    _bad("bool-for-a-number", BASE + "mast:\n  retries: no\n",
         "{f}:8:12: mast.retries: must be a number, not no (YAML reads it as false)",
         "  hint: retries: retries per request after timeouts, connection errors, 429 and 5xx"),
    # ---- YAML 1.1 numbers not written as plain decimals --------------------------------------
    _bad("octal-proposal-id", BASE + "      proposal_id: 01073\n",
         "{f}:7:20: query.q.criteria.proposal_id: 01073 was read as the octal number 571",
         '  hint: quote it ("01073") if you mean the text, or write 1073 for the decimal number; ' + OCTAL_WHY),
    _bad("misread-numbers-in-a-criterion-list", BASE + "      proposal_id: [1073, 0x1F, 12:30, 0b101]\n",
         "{f}:7:27: query.q.criteria.proposal_id[1]: 0x1F was read as the hexadecimal number 31",
         '  hint: quote it ("0x1F") if you mean the text; YAML 1.1 reads 0x... as hexadecimal',
         "{f}:7:33: query.q.criteria.proposal_id[2]: 12:30 was read as 750 (YAML 1.1 base 60)",
         '  hint: quote it ("12:30") if you mean the text; YAML 1.1 reads digits joined by colons as base 60',
         "{f}:7:40: query.q.criteria.proposal_id[3]: 0b101 was read as the binary number 5",
         '  hint: quote it ("0b101") if you mean the text; YAML 1.1 reads 0b... as binary'),
    _bad("misread-numbers-in-columns", BASE + "filter:\n  columns:\n    obs_id: 1_000\n    calib_level: [2, 03]\n",
         "{f}:9:13: filter.columns.obs_id: 1_000 was read as the number 1000",
         '  hint: quote it ("1_000") if you mean the text; ' + UNDERSCORE_WHY,
         "{f}:10:22: filter.columns.calib_level[1]: 03 was read as the octal number 3",
         "  hint: write 3 (plain decimal digits); " + OCTAL_WHY),
    _bad("misread-range-bounds", BASE + "      t_exptime: {min: 1:30, max: .inf}\n",
         "{f}:7:24: query.q.criteria.t_exptime.min: 1:30 was read as 90 (YAML 1.1 base 60)",
         "  hint: write 90 (plain decimal digits); YAML 1.1 reads digits joined by colons as base 60",
         "{f}:7:35: query.q.criteria.t_exptime.max: .inf was read as infinity",
         "  hint: give a finite number, or leave max out for a range open at that end; " + SPECIAL_WHY),
    _bad("misread-numbers-in-settings",
         BASE + "mast:\n  page_size: 50_000\n  timeout: -.inf\nproducts:\n  in_flight: 030\n",
         "{f}:8:14: mast.page_size: 50_000 was read as the number 50000",
         "  hint: write 50000 (plain decimal digits); " + UNDERSCORE_WHY,
         "{f}:9:12: mast.timeout: -.inf was read as minus infinity",
         "  hint: give a finite number; " + SPECIAL_WHY,
         "{f}:11:14: products.in_flight: 030 was read as the octal number 24",
         "  hint: write 30 (plain decimal digits); " + OCTAL_WHY),
    _bad("misread-numbers-for-text", "version: 1\nname: 01073\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n"
         "retrieve:\n  destination: 2024_01\n",
         "{f}:2:7: name: 01073 was read as the octal number 571, not text",
         '  hint: quote it ("01073") if you mean the text; ' + OCTAL_WHY,
         "{f}:8:16: retrieve.destination: 2024_01 was read as the number 202401, not text",
         '  hint: quote it ("2024_01") if you mean the text; ' + UNDERSCORE_WHY),
    _bad("misread-coordinates", POS + "      coordinates: [0x53, 22]\n      radius: 12:30\n",
         "{f}:8:21: query.q.position.coordinates[0]: 0x53 was read as the hexadecimal number 83",
         "  hint: write 83 (plain decimal digits); YAML 1.1 reads 0x... as hexadecimal",
         "{f}:9:15: query.q.position.radius: 12:30 was read as 750 (YAML 1.1 base 60), not text",
         '  hint: quote it ("12:30") if you mean the text; YAML 1.1 reads digits joined by colons as base 60'),
    _bad("null-text-with-a-default", BASE + "retrieve:\n  destination:\n",
         "{f}:8:15: retrieve.destination: has no value, but must be text",
         "  hint: destination: directory files go under; relative paths are relative to the recipe file; "
         "remove the key to use the default, 'data'"),
    _bad("null-radius", POS + "      object: M1\n      radius: ~\n",
         "{f}:9:15: query.q.position.radius: has no value (~), but must be text",
         RADIUS_HINT + "; remove the key to use the default, '0.2 deg'"),
    _bad("null-name", "version: 1\nname: null\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:2:7: name: has no value (null), but must be text",
         "  hint: name: short identifier (letters, digits, . _ -); names the state directory"),
    # ---- unknown keys at every level ---------------------------------------------------------
    _bad("unknown-top-level", BASE + "bogus: 1\n",
         "{f}:7:1: bogus: unknown key 'bogus'",
         "  hint: allowed keys here: description, expect, filter, mast, name, products, query, retrieve, state, unique, version"),
    _bad("unknown-mast", BASE + "mast:\n  urll: https://example.org\n",
         "{f}:8:3: mast.urll: unknown key 'urll'", "  hint: did you mean 'url'?"),
    _bad("unknown-query-entry", BASE + "    positon: {object: M1}\n",
         "{f}:7:5: query.q.positon: unknown key 'positon'", "  hint: did you mean 'position'?"),
    _bad("unknown-query-entry-capitalised-name",
         "version: 1\nname: t\nquery:\n  Crab:\n    criteria:\n      obs_collection: HST\n    bogus: 1\n",
         "{f}:7:5: query.Crab.bogus: unknown key 'bogus'", "  hint: allowed keys here: conditions, criteria, expect, mission, position, select_cols"),
    _bad("unknown-criteria-field", BASE + "      instrument: NIRCAM\n",
         "{f}:7:7: query.q.criteria.instrument: unknown observation field 'instrument'",
         "  hint: did you mean 'instrument_name'?"),
    _bad("unknown-criteria-field-case", BASE + "      Obs_Collection: HST\n",
         "{f}:7:7: query.q.criteria.Obs_Collection: unknown observation field 'Obs_Collection'",
         "  hint: did you mean 'obs_collection'?"),
    _bad("unknown-criteria-field-no-suggestion", BASE + "      colour: red\n",
         "{f}:7:7: query.q.criteria.colour: unknown observation field 'colour'",
         "  hint: criteria take MAST's CAOM observation fields, e.g. obs_collection, proposal_id, instrument_name"),
    _bad("unknown-position", POS + "      object: M1\n      radios: 2 deg\n",
         "{f}:9:7: query.q.position.radios: unknown key 'radios'", "  hint: did you mean 'radius'?"),
    _bad("unknown-products", BASE + "products:\n  batchsize: 3\n",
         "{f}:8:3: products.batchsize: unknown key 'batchsize'", "  hint: did you mean 'batch_size'?"),
    _bad("unknown-unique", BASE + "unique:\n  keys: dataURI\n",
         "{f}:8:3: unique.keys: unknown key 'keys'", "  hint: did you mean 'key'?"),
    _bad("unknown-filter", BASE + "filter:\n  contain: [x]\n",
         "{f}:8:3: filter.contain: unknown key 'contain'", "  hint: did you mean 'contains'?"),
    _bad("unknown-filter-column", BASE + "filter:\n  columns:\n    productsubgroupdescription: UNCAL\n",
         "{f}:9:5: filter.columns.productsubgroupdescription: unknown product column 'productsubgroupdescription'",
         "  hint: did you mean 'productSubGroupDescription'?"),
    _bad("unknown-retrieve", BASE + "retrieve:\n  destinaton: data\n",
         "{f}:8:3: retrieve.destinaton: unknown key 'destinaton'", "  hint: did you mean 'destination'?"),
    _bad("unknown-state", BASE + "state:\n  dir: .state\n",
         "{f}:8:3: state.dir: unknown key 'dir'", "  hint: allowed keys here: directory, ledger_journal, query_max_age"),
    # ---- criteria -----------------------------------------------------------------------------
    _bad("range-on-discrete-field", BASE + "      obs_id: {min: 1, max: 2}\n",
         "{f}:7:15: query.q.criteria.obs_id: obs_id is not a continuous field, so it takes a value or a list, "
         "not a range",
         "  hint: ranges work only on distance, em_max, em_min, s_dec, s_ra, srcDen, t_exptime, t_max, t_min, "
         "t_obs_release"),
    _bad("scalar-on-continuous-field", BASE + "      t_min: 59000\n",
         "{f}:7:14: query.q.criteria.t_min: t_min is continuous: give a range {min: ..., max: ...}, not 59000",
         "  hint: e.g. t_min: {min: 1, max: 2}"),
    _bad("range-min-greater-than-max", BASE + "      t_exptime: {min: 3, max: 2}\n",
         "{f}:7:18: query.q.criteria.t_exptime: min (3) is greater than max (2), so nothing matches", RANGE_HINT),
    _bad("range-dates-min-greater-than-max", BASE + "      t_min: {min: 2023-01-01, max: 2022-01-01}\n",
         "{f}:7:14: query.q.criteria.t_min: min (59945) is greater than max (59580), so nothing matches", RANGE_HINT),
    _bad("range-unknown-key", BASE + "      t_exptime: {min: 3, mx: 4}\n",
         "{f}:7:18: query.q.criteria.t_exptime: a range takes only min and max, not 'mx'",
         "  hint: write {min: ..., max: ...}"),
    _bad("range-not-a-number", BASE + "      em_min: {min: blue}\n",
         "{f}:7:15: query.q.criteria.em_min: min: must be a number, not 'blue'", RANGE_HINT),
    _bad("range-bound-true", BASE + "      t_exptime: {min: true}\n",
         "{f}:7:18: query.q.criteria.t_exptime: min: must be a number, not true", RANGE_HINT),
    _bad("range-bound-nan", BASE + "filter:\n  columns:\n    size: {max: .nan}\n",
         '{f}:9:17: filter.columns.size.max: .nan was read as NaN ("not a number")',
         "  hint: give a finite number, or leave max out for a range open at that end; " + SPECIAL_WHY),
    _bad("range-empty", BASE + "      em_min: {}\n",
         "{f}:7:15: query.q.criteria.em_min: a range needs min, max or both", RANGE_HINT),
    _bad("bad-iso-date", BASE + "      t_min: {min: 2022-13-01}\n",
         "{f}:7:14: query.q.criteria.t_min: min: cannot read date '2022-13-01'; write an ISO date like "
         "2023-01-31 or 2023-01-31T12:00:00, or an MJD number",
         "  hint: dates are taken as UTC and compared as MJD"),
    _bad("range-on-text-column", BASE + "filter:\n  columns:\n    productType: {min: 1}\n",
         "{f}:9:18: filter.columns.productType: productType is a text column, so it takes a value or a list, "
         "not a range",
         "  hint: ranges work only on numeric columns: size, calib_level"),
    _bad("empty-criteria-list", BASE + "      proposal_id: []\n",
         "{f}:7:20: query.q.criteria.proposal_id: proposal_id: an empty list matches nothing",
         "  hint: remove the field or give values"),
    # ---- position -----------------------------------------------------------------------------
    _bad("radius-bad-unit", POS + "      object: M1\n      radius: 3 parsec\n",
         "{f}:9:15: query.q.position.radius: unknown angle unit 'parsec' in radius '3 parsec'; "
         "use deg, arcmin or arcsec", RADIUS_HINT),
    _bad("radius-without-unit", POS + "      object: M1\n      radius: 3\n",
         '{f}:9:15: query.q.position.radius: radius 3 has no unit; write e.g. "3 deg" or "3 arcsec"', RADIUS_HINT),
    _bad("radius-zero", POS + "      object: M1\n      radius: 0 deg\n",
         "{f}:9:15: query.q.position.radius: radius '0 deg' must be greater than 0 and at most 180 deg", RADIUS_HINT),
    _bad("position-coordinates-and-object", POS + "      coordinates: 83.633 22.0145\n      object: M1\n",
         "{f}:8:7: query.q.position: both `coordinates` and `object` are given; keep one",
         "  hint: position: restrict the search to a cone on the sky"),
    _bad("position-neither", POS + "      radius: 1 deg\n",
         "{f}:8:7: query.q.position: a position needs `coordinates` or `object`",
         "  hint: position: restrict the search to a cone on the sky"),
    _bad("coordinates-unreadable", POS + "      coordinates: here\n",
         "{f}:8:20: query.q.position.coordinates: cannot read coordinates 'here'; write \"ra dec\" in degrees "
         "or sexagesimal like \"05h34m31.9s +22d00m52s\"", COORD_HINT),
    _bad("coordinates-out-of-range", POS + "      coordinates: [83.6, 95]\n",
         "{f}:8:20: query.q.position.coordinates: coordinates out of range: ra must be in [0, 360) and dec in "
         "[-90, 90], got 83.6, 95.0", COORD_HINT),
    _bad("coordinates-a-number", POS + "      coordinates: 5\n",
         "{f}:8:20: query.q.position.coordinates: coordinates must be text like \"83.633 22.0145\" "
         "or a list [ra, dec]", COORD_HINT),
    # ---- variables and secrets ----------------------------------------------------------------
    _bad("unset-variable", BASE + "retrieve:\n  destination: ${MASTPIPE_TEST_UNSET}/data\n",
         "{f}:8:16: retrieve.destination: environment variable MASTPIPE_TEST_UNSET is not set",
         "  hint: export MASTPIPE_TEST_UNSET=... before running, or write ${MASTPIPE_TEST_UNSET:-default}"),
    _bad("bad-variable-name", BASE + "retrieve:\n  destination: ${1BAD}/data\n",
         "{f}:8:16: retrieve.destination: ${1BAD} is not a valid variable reference",
         "  hint: write ${NAME} or ${NAME:-default}; $$ for a literal $"),
    _bad("token-variable", BASE + "retrieve:\n  destination: data/${MAST_API_TOKEN}\n",
         "{f}:8:16: retrieve.destination: the recipe refers to ${MAST_API_TOKEN}",
         "  hint: remove it: mastpipe reads MAST_API_TOKEN from the environment itself, and a token must never "
         "end up in paths or logs"),
    _bad("token-key", BASE + "token: abc\n",
         "{f}:7:1: token: the key 'token' looks like a secret", SECRET_HINT),
    _bad("token-key-nested", BASE + "mast:\n  api_key: abc\n",
         "{f}:8:3: mast.api_key: the key 'api_key' looks like a secret", SECRET_HINT),
    _bad("token-key-camel-case", BASE + "retrieve:\n  mastToken: abc\n",
         "{f}:8:3: retrieve.mastToken: the key 'mastToken' looks like a secret", SECRET_HINT),
    _bad("token-as-a-criterion", BASE + "      token: abc\n",
         "{f}:7:7: query.q.criteria.token: the key 'token' looks like a secret", SECRET_HINT),
    _bad("token-value-32-hex", BASE + "description: 0123456789abcdef0123456789ABCDEF\n",
         "{f}:7:14: description: this value looks like an access token", SECRET_HINT),
    _bad("token-value-bearer", BASE + "retrieve:\n  destination: Bearer abc.def\n",
         "{f}:8:16: retrieve.destination: this value looks like an access token", SECRET_HINT),
    # ---- the rest of the language ------------------------------------------------------------
    _bad("layout-without-filename", BASE + "retrieve:\n  layout: '{obs_id}/x.fits'\n",
         '{f}:8:11: retrieve.layout: a layout template must contain {productFilename}, '
         'e.g. "{obs_collection}/{productFilename}"', LAYOUT_HINT),
    _bad("layout-unknown-column", BASE + "retrieve:\n  layout: '{obsid}/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: unknown product column {obsid} in layout", "  hint: did you mean 'obsID'?"),
    _bad("layout-unclosed-placeholder", BASE + "retrieve:\n  layout: '{obs_id}/{productFilename'\n",
         "{f}:8:11: retrieve.layout: the placeholder '{productFilename' in layout is not closed: a } is missing",
         PLACEHOLDERS_HINT),
    _bad("layout-placeholder-runs-into-the-next", BASE + "retrieve:\n  layout: '{obs_id/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: the placeholder '{obs_id/' in layout is not closed: a } is missing",
         PLACEHOLDERS_HINT),
    _bad("layout-stray-closing-brace", BASE + "retrieve:\n  layout: 'obs_id}/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: a } at character 7 of the layout closes no placeholder", PLACEHOLDERS_HINT),
    _bad("layout-unknown-column-no-suggestion", BASE + "retrieve:\n  layout: '{foo}/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: unknown product column {foo} in layout", PLACEHOLDERS_HINT),
    _bad("layout-empty-placeholder", BASE + "retrieve:\n  layout: '{}/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: an empty placeholder {} in layout", PLACEHOLDERS_HINT),
    _bad("layout-format-spec", BASE + "retrieve:\n  layout: '{obs_id:>5}/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: placeholder {obs_id:>5} in layout: a placeholder is a plain column name, "
         "without formatting (:...), conversion (!...), attributes or indexes", "  hint: write {obs_id}"),
    _bad("layout-attribute", BASE + "retrieve:\n  layout: '{obs_id.upper}/{productFilename}'\n",
         "{f}:8:11: retrieve.layout: placeholder {obs_id.upper} in layout: a placeholder is a plain column name, "
         "without formatting (:...), conversion (!...), attributes or indexes", "  hint: write {obs_id}"),
    _bad("layout-empty-directory", BASE + "retrieve:\n  layout: '{obs_id}//{productFilename}'\n",
         "{f}:8:11: retrieve.layout: a layout template has an empty directory name (`//`, `/.`, or a `/` at the end)",
         LAYOUT_HINT),
    _bad("layout-escapes-destination", BASE + "retrieve:\n  layout: '../{productFilename}'\n",
         "{f}:8:11: retrieve.layout: a layout template is relative to the destination and may not contain `..`",
         LAYOUT_HINT),
    _bad("bad-name", "version: 1\nname: 'my recipe!'\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:2:7: name: 'my recipe!' is not a valid name",
         "  hint: use 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    _bad("bad-query-name", "version: 1\nname: t\nquery:\n  my search:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:4:3: query.my search: 'my search' is not a valid name for a search",
         "  hint: use letters, digits, '_' and '-', starting with a letter or digit"),
    _bad("version-2", "version: 2\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:1:10: version: unsupported recipe version 2; this mastpipe reads version 1",
         "  hint: write `version: 1`; newer recipes need a newer mastpipe"),
    _bad("version-quoted", "version: '1'\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:1:10: version: the version is the number 1, not '1'",
         "  hint: version: recipe language version; this is version 1"),
    _bad("version-true", "version: true\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:1:10: version: the version is the number 1, not true",
         "  hint: version: recipe language version; this is version 1"),
    _bad("version-missing", "name: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n",
         "{f}:1:1: version: required key 'version' is missing", "  hint: start the recipe with `version: 1`"),
    _bad("in-flight-over-limit", BASE + "mast:\n  max_in_flight: 2\nproducts:\n  in_flight: 4\n",
         "{f}:10:14: products.in_flight: 4 product-list requests in flight exceed mast.max_in_flight (2)",
         "  hint: lower products.in_flight or raise mast.max_in_flight"),
    _bad("empty-query", "version: 1\nname: t\nquery: {}\n",
         "{f}:3:8: query: must name at least one search",
         "  hint: add one, e.g. `query: {main: {criteria: {obs_collection: JWST}}}`"),
    _bad("empty-criteria", "version: 1\nname: t\nquery:\n  q:\n    criteria: {}\n",
         "{f}:5:15: query.q.criteria: criteria must name at least one field (MAST refuses searches without any)",
         "  hint: add at least one field, e.g. `obs_collection: JWST`"),
    _bad("missing-criteria", "version: 1\nname: t\nquery:\n  q:\n    position: {object: M1}\n",
         "{f}:5:5: query.q.criteria: required key 'criteria' is missing",
         "  hint: add `criteria:` with at least one field, e.g. `obs_collection: JWST`"),
    _bad("bad-mast-url", BASE + "mast:\n  url: mast.stsci.edu\n",
         "{f}:8:8: mast.url: 'mast.stsci.edu' is not an http(s) URL like https://mast.stsci.edu",
         "  hint: url: MAST's base URL"),
    _bad("bad-duration", BASE + "state:\n  query_max_age: tomorrow\n",
         "{f}:8:18: state.query_max_age: cannot read duration 'tomorrow'; write a number and one of "
         "s, m, h, d, w, e.g. \"7d\"",
         "  hint: query_max_age: re-run the query stage when its results are older than this, "
         "e.g. \"1d\" or \"12h\" (scheduled reruns)"),
    _bad("empty-filter-string", BASE + "filter:\n  exclude: ['']\n",
         "{f}:8:12: filter.exclude: an empty string would match every file name",
         "  hint: exclude: drop products whose file name contains any of these"),
]

#: Variables the corpus relies on being unset (the CLI tests remove them from the environment).
UNSET = ("MASTPIPE_TEST_UNSET",)


def matches(case: Bad, path: Path, actual: str) -> bool:
    """Whether ``actual`` is exactly the expected output (``{deep}``: any column number)."""
    expected = case.output(path)
    if "{deep}" not in expected:
        return actual == expected
    # where PyYAML's recursive parser gives up depends on the stack in use; the line does not
    return re.fullmatch(re.escape(expected).replace(re.escape("{deep}"), r"\d+"), actual) is not None


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CORPUS) >= 35
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_bad_recipe_gives_its_exact_error(case: Bad, tmp_path: Path) -> None:
    path = case.make(tmp_path)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, environ={})
    assert matches(case, path, str(caught.value)), f"\nexpected:\n{case.output(path)}\nactual:\n{caught.value}"
    for problem in caught.value.problems:
        assert "\n" not in problem.one_line()
        assert problem.hint, f"every problem says what to do: {problem.one_line()}"
    assert not (tmp_path / "MARKER").exists()


def _positive_control_marker_payload(tmp_path: Path) -> str:
    return f"name: !!python/object/apply:os.system ['touch {tmp_path / 'MARKER'}']\n"


def test_unsafe_tags_execute_nothing(tmp_path: Path) -> None:
    # The payload is real: an unsafe loader would create the marker ...
    yaml.unsafe_load(_positive_control_marker_payload(tmp_path))
    assert (tmp_path / "MARKER").exists()
    (tmp_path / "MARKER").unlink()
    # ... the recipe loader refuses it, in a value or in a key, and nothing runs.
    for case in CORPUS:
        if case.id.startswith("unsafe-"):
            path = case.make(tmp_path)
            with pytest.raises(RecipeError):
                load_recipe(path, environ={})
            assert not (tmp_path / "MARKER").exists(), case.id


def test_alias_bomb_fails_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(RecipeError, match="aliases expand to more than 100,000 values"):
            load_recipe(path, environ={})
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert peak < 20_000_000, f"peaked at {peak / 1e6:.1f} MB"


def test_a_small_alias_use_is_fine(tmp_path: Path) -> None:
    """Anchors, aliases and merge keys are legitimate YAML; only explosive use is refused."""
    path = tmp_path / "aliases.yaml"
    path.write_text(
        "version: 1\nname: t\n"
        "query:\n"
        "  a: &search\n    criteria: &jwst\n      obs_collection: JWST\n      proposal_id: '1073'\n"
        "  b:\n    criteria:\n      <<: *jwst\n      proposal_id: '1345'\n"
        "  c: *search\n"
        "  d:\n    criteria: *jwst\n")
    recipe = load_recipe(path, environ={})
    assert recipe.query["b"].criteria == {"obs_collection": "JWST", "proposal_id": "1345"}
    assert recipe.query["c"] == recipe.query["a"] == recipe.query["d"]


def test_aliased_mapping_with_merge_override_is_not_a_duplicate(tmp_path: Path) -> None:
    """Regression: a mapping that overrides a merged key, used twice by alias, was reported as a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        "version: 1\nname: t\n"
        "query:\n"
        "  a:\n    criteria: &c\n      <<: {obs_collection: HST, proposal_id: '1'}\n      proposal_id: '2'\n"
        "  b:\n    criteria: *c\n"
        "  c:\n    criteria: *c\n")
    recipe = load_recipe(path, environ={})
    assert recipe.query["c"].criteria == {"obs_collection": "HST", "proposal_id": "2"}


def test_one_recipe_with_several_problems_reports_all_sorted_by_line(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "version: 1\n"                                   # 1
        "name: many\n"                                   # 2
        "query:\n"                                       # 3
        "  q:\n"                                         # 4
        "    criteria:\n"                                # 5
        "      obs_colection: JWST\n"                    # 6  unknown field
        "      t_min: {min: 3, max: 2}\n"                # 7  min > max
        "mast:\n"                                        # 8
        "  timeout: soon\n"                              # 9  wrong type
        "  password: hunter2\n"                          # 10 secret key
        "retrieve:\n"                                    # 11
        "  destination: ${MASTPIPE_TEST_UNSET}\n"       # 12 unset variable
        "  mode: wget\n"                                 # 13 literal
        "bogus: 1\n")                                    # 14 unknown key
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, environ={})
    lines = [problem.one_line() for problem in caught.value.problems]
    f = str(path)
    assert lines == [
        f"{f}:6:7: query.q.criteria.obs_colection: unknown observation field 'obs_colection'",
        f"{f}:7:14: query.q.criteria.t_min: min (3) is greater than max (2), so nothing matches",
        f"{f}:9:12: mast.timeout: must be a number, not 'soon'",
        f"{f}:10:3: mast.password: the key 'password' looks like a secret",
        f"{f}:12:16: retrieve.destination: environment variable MASTPIPE_TEST_UNSET is not set",
        f"{f}:13:9: retrieve.mode: must be 'download', 'curl' or 'manifest', not 'wget'",
        f"{f}:14:1: bogus: unknown key 'bogus'",
    ]
    assert caught.value.problems[0].hint == "did you mean 'obs_collection'?"
    assert all(problem.hint for problem in caught.value.problems)


def test_every_bad_criterion_is_reported_where_it_stands(tmp_path: Path) -> None:
    path = tmp_path / "criteria.yaml"
    path.write_text(BASE + "      instrument: NIRCAM\n      obs_id: {min: 1}\n      s_ra: 5\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, environ={})
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (7, "query.q.criteria.instrument"), (8, "query.q.criteria.obs_id"), (9, "query.q.criteria.s_ra")]


def test_booleans_stay_valid_where_they_are_meant(tmp_path: Path) -> None:
    """The YAML boolean rule must not touch real true/false fields, nor quoted words."""
    path = tmp_path / "booleans.yaml"
    path.write_text(BASE + '      mtFlag: yes\n      target_name: ["NO", "off"]\nfilter:\n  mrp_only: on\n'
                    '  contains: ["yes"]\n  columns: {dataRights: "NO"}\n')
    recipe = load_recipe(path, environ={})
    assert recipe.query["q"].criteria["mtFlag"] is True
    assert recipe.query["q"].criteria["target_name"] == ["NO", "off"]
    assert recipe.filter.mrp_only is True
    assert recipe.filter.contains == ["yes"] and recipe.filter.columns == {"dataRights": "NO"}


def test_plain_decimals_and_quoted_numbers_stay_valid(tmp_path: Path) -> None:
    """The YAML number rule must not touch plain decimals, nor quoted text; and what is kept is
    what MAST is sent (astroquery sends discrete values as str(value): 1073 -> "1073")."""
    from mastpipe.stages.query import astroquery_criteria

    path = tmp_path / "numbers.yaml"
    path.write_text(BASE + '      proposal_id: ["01073", 1073, +1345, 01089]\n      obs_id: "0x1F"\n'
                    "      t_exptime: {min: 0, max: 1.5e+3}\n      em_min: {min: -0, max: 0.5}\n"
                    '    position: {coordinates: [83.633, 22.0145], radius: 30 arcsec}\n'
                    "filter:\n  columns: {calib_level: [0, 2], size: {max: 10}}\n"
                    "mast:\n  page_size: 50000\n  timeout: 60.\n")
    recipe = load_recipe(path, environ={})
    criteria = recipe.query["q"].criteria
    assert criteria["proposal_id"] == ["01073", 1073, 1345, "01089"]  # YAML 1.1: 01089 is not octal, so text
    assert criteria["obs_id"] == "0x1F"
    assert (criteria["t_exptime"].min, criteria["t_exptime"].max) == (0, 1500)
    assert recipe.filter.columns["calib_level"] == [0, 2] and recipe.mast.timeout == 60
    sent = astroquery_criteria(criteria)[0]
    assert sent["proposal_id"] == ["01073", 1073, 1345, "01089"]


@pytest.mark.parametrize(("written", "read"), [
    ("01073", "the octal number 571"), ("-012", "the octal number -10"), ("00", "the octal number 0"),
    ("0x1F", "the hexadecimal number 31"), ("+0x10", "the hexadecimal number 16"), ("0b101", "the binary number 5"),
    ("12:30", "750 (YAML 1.1 base 60)"), ("1:30.5", "90.5 (YAML 1.1 base 60)"), ("1_000", "the number 1000"),
    ("1_000.5", "the number 1000.5"), (".inf", "infinity"), ("-.inf", "minus infinity"),
    (".nan", 'NaN ("not a number")'),
])
def test_numbers_yaml_misreads_are_recognised(written: str, read: str) -> None:
    from mastpipe.recipe.problems import misread_number

    value = yaml.safe_load(f"v: {written}")["v"]
    found = misread_number(written, value)
    assert found is not None and found[1] == read


@pytest.mark.parametrize("written", ["0", "-0", "+1073", "1073", "0.5", "01.5", "1.5e+3", ".5", "60."])
def test_plain_decimals_are_not_misreads(written: str) -> None:
    from mastpipe.recipe.problems import misread_number

    assert misread_number(written, yaml.safe_load(f"v: {written}")["v"]) is None


@pytest.mark.parametrize("section", [
    {"query": {"q": {"criteria": {"obs_collection": "JWST", "target_name": False}}}},
    {"query": {"q": {"criteria": {"obs_collection": ["JWST", True]}}}},
    {"filter": {"columns": {"dataRights": False}}},
    {"filter": {"exclude": [True]}},
    {"retrieve": {"layout": False}},
    {"state": {"directory": True}},
], ids=["criterion", "criterion-list", "column", "suffix-list", "layout", "state-directory"])
def test_the_models_refuse_booleans_for_text_without_yaml_too(section: dict) -> None:
    """Recipes built in Python go through the same rule as recipes read from YAML."""
    data = {"version": 1, "name": "t", "query": {"q": {"criteria": {"obs_collection": "JWST"}}}, **section}
    with pytest.raises(ValidationError, match="is a boolean, not text"):
        Recipe.model_validate(data)


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, environ={})
    assert str(caught.value) == (f"{path}: <recipe>: is larger than 1,000,000 bytes, far more than any recipe\n"
                                 "  hint: check that the path names a recipe, not a data file")


ROOT = Path(__file__).resolve().parents[2]
VALID_TEXTS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "pipelines").glob("*.yaml"))]
#: Pieces that tend to break YAML or a recipe in interesting ways.
PIECES = list(" \n\t:-[]{},&*!|>'\"#%@`?$01aZ_.\x00\x85\ufeff") + [
    "${X}", "${", "<<: *a", "&a ", "*a", "!!str ", "!!int ", "!!float ", "!!bool ", "!!map ", "!!seq ",
    "!!python/name:os.system ", "yes", "null", "~", "2022-01-01", "2022-13-45", "{min: 1}", "{min: 2, max: 1}",
    "---\n", "\"", "\\n"]


@st.composite
def mutated_recipes(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "copy"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(PIECES)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 12)):]
        else:
            start = draw(st.integers(0, len(text)))
            text = text[:at] + text[start:start + draw(st.integers(1, 40))] + text[at:]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_recipes())
def test_any_damage_to_a_recipe_gives_located_one_line_problems_never_a_crash(text: str) -> None:
    try:
        recipe = parse_recipe(load_yaml_text(text, "fuzzed.yaml"), {"X": "1"})
    except RecipeError as error:
        assert error.problems
        for problem in error.problems:
            assert "\n" not in problem.one_line() and problem.one_line().startswith("fuzzed.yaml")
            assert problem.hint and "\n" not in str(problem).split("\n", 1)[1]
        lines = [(p.line or 0, p.column or 0) for p in error.problems]
        assert lines == sorted(lines)
    else:
        assert isinstance(recipe, Recipe)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        parse_recipe(load_yaml_text(text, "text.yaml"), {})
    except RecipeError as error:
        assert all(problem.hint and "\n" not in problem.one_line() for problem in error.problems)


_LAYOUT_PIECES = ["{", "}", "{{", "}}", "/", ".", "..", ":", "!r", "[0]", "x", "_", "{productFilename}", "{obs_id}",
                  "productFilename", "obs_id", "{size}", " "]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_LAYOUT_PIECES), min_size=1, max_size=8).map("".join))
@example("{productFilename}/ ")  # found by this test: a directory named only by a space
@example(" /{productFilename}")
def test_a_layout_the_validator_accepts_builds_a_path_and_one_it_refuses_is_explained(template: str) -> None:
    """The validator reads layouts as the download code does: no template passes validation
    and then fails (or crashes) when the first path is built."""
    from mastpipe.recipe.fields import PRODUCT_COLUMNS
    from mastpipe.stages.retrieve.paths import relative_product_path
    from mastpipe.recipe.models import layout_problem

    problem = layout_problem(template)
    if problem is None:
        row = {name: "v" for name in PRODUCT_COLUMNS} | {"productFilename": "f.fits", "size": 5}
        path = relative_product_path(row, template)
        assert path.name and not path.is_absolute() and ".." not in path.parts
    else:
        message, hint = problem
        assert message and "\n" not in message and (hint is None or "\n" not in hint)
