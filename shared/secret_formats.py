"""Airflow's formats for connections and variables, as pure functions, with Airflow's rules.

Connection URIs and JSON follow ``airflow.models.connection.Connection`` of Airflow 3.3
(``_parse_from_uri``, ``get_uri``, ``from_json``), which the ``airflow connections``
commands use; the files of ``import`` / ``export`` follow
``airflow.secrets.local_filesystem`` (``.env``, ``.json``, ``.yaml`` / ``.yml``) and the
export functions of Airflow's CLI. Nothing here needs Airflow installed, so the
``sluice variables`` / ``sluice connections`` commands work with or without it; the
tests hold these functions to Airflow's own test vectors, and to Airflow itself where
it is installed. Errors are ``FormatError``: one line, never holding a password.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

EXTRA_KEY = "__extra__"
CONN_ID_MAX_LEN = 200  # what `airflow connections add / import` accept
_KEY_RE = re.compile(r"^[\w.-]+$")
_COMMENT_RE = re.compile(r"\s*#.*")
FILE_EXTENSIONS = (".env", ".json", ".yaml", ".yml")
# the keyword arguments of Airflow's Connection, as a file's connection object may use them
_CONNECTION_KEYS = {"conn_id", "conn_type", "description", "host", "login", "password", "schema",
                    "port", "extra", "uri", "extra_dejson"}
_JSON_KEYS = _CONNECTION_KEYS - {"conn_id", "extra_dejson"}


class FormatError(ValueError):
    """Input in none of Airflow's formats; the message is one line, without secrets."""


@dataclass
class Conn:
    """A connection's fields as Airflow's ``Connection`` holds them (``extra``: a JSON object text).

    As Airflow's password setter, an empty password is no password; an empty extra is none.
    """

    conn_id: str | None = None
    conn_type: str | None = None
    description: str | None = None
    host: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    port: int | None = None
    extra: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.password = self.password or None
        if self.extra and not isinstance(self.extra, str):
            self.extra = json.dumps(self.extra)
        self.extra = self.extra or None
        validate_extra(self.extra, self.conn_id)
        self.port = _port(self.port, self.conn_id)

    @property
    def extra_dejson(self) -> dict:
        return json.loads(self.extra) if self.extra else {}


def _port(value: Any, conn_id: str | None) -> int | None:
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FormatError(f"connection {conn_id!r}: port must be an integer, "
                          f"not {value!r}") from None


def validate_extra(extra: str | None, conn_id: str | None) -> None:
    """``extra`` must be the JSON text of an object (Airflow's ``_validate_extra``)."""
    if not extra:
        return
    try:
        parsed = json.loads(extra)
    except ValueError:
        raise FormatError(f"connection {conn_id!r}: extra is not JSON") from None
    if not isinstance(parsed, dict):
        raise FormatError(f"connection {conn_id!r}: extra must be a JSON object")


def validate_conn_id(conn_id: Any) -> str:
    """``conn_id`` as Airflow's CLI accepts it: letters, digits, ``_ . -``; at most 200."""
    if not isinstance(conn_id, str) or not conn_id:
        raise FormatError(f"connection id {conn_id!r} must be a non-empty string")
    if len(conn_id) > CONN_ID_MAX_LEN:
        raise FormatError(f"connection id {conn_id!r} has to be less than "
                          f"{CONN_ID_MAX_LEN} characters")
    if not _KEY_RE.match(conn_id):
        raise FormatError(f"connection id {conn_id!r} has to be made of alphanumeric "
                          "characters, dashes, dots and underscores exclusively")
    if ".." in conn_id:
        raise FormatError(f"connection id {conn_id!r} must not contain consecutive dots ('..')")
    return conn_id


def normalize_conn_type(conn_type: str) -> str:
    """``postgresql`` is ``postgres``; dashes become underscores."""
    if conn_type == "postgresql":
        return "postgres"
    return conn_type.replace("-", "_")


# --- URIs ------------------------------------------------------------------------------------
def from_uri(uri: str, conn_id: str | None = None, description: str | None = None) -> Conn:
    """Airflow's ``Connection(uri=...)``: scheme = type, netloc, path = schema, query = extra.

    A host may carry its own protocol (``spark://k8s://host:443``); percent-encoded parts
    are decoded; query values that parse as JSON are kept as JSON values unless the
    query is a single ``__extra__`` holding the whole extra.
    """
    if uri.count("://") > 2:
        raise FormatError("invalid connection URI: more than two '://'")
    host_with_protocol = uri.count("://") == 2
    parts = urlsplit(uri)
    scheme = parts.scheme
    if not scheme:
        raise FormatError("invalid connection URI: it has no scheme (the connection type)")
    rest = uri.replace(f"{scheme}://", "" if host_with_protocol else "//")
    if host_with_protocol:
        before = rest.split("://", 1)[0]
        if "@" in before or ":" in before:
            raise FormatError("invalid connection URI: a protocol in the host must come first")
    parts = urlsplit(rest)
    try:
        port = parts.port
    except ValueError as exc:
        raise FormatError(f"invalid connection URI: {exc}") from None
    host = _netloc_hostname(parts)
    if host and host_with_protocol:
        host = f"{parts.scheme}://{host}"
    schema = unquote(parts.path[1:]) if parts.path[1:] else parts.path[1:]
    return Conn(
        conn_id=conn_id, conn_type=normalize_conn_type(scheme), description=description,
        host=host, schema=schema,
        login=unquote(parts.username) if parts.username else parts.username,
        password=unquote(parts.password) if parts.password else parts.password,
        port=port, extra=_query_extra(parts.query))


def _netloc_hostname(parts) -> str:
    """The host, decoded; a host with ``/`` in it is taken from the netloc as written."""
    hostname = unquote(parts.hostname or "")
    if "/" in hostname:
        hostname = parts.netloc
        if "@" in hostname:
            hostname = hostname.rsplit("@", 1)[1]
        if ":" in hostname:
            hostname = hostname.split(":", 1)[0]
        hostname = unquote(hostname)
    return hostname


def _query_extra(query: str) -> str | None:
    if not query:
        return None
    pairs = dict(parse_qsl(query, keep_blank_values=True))
    if EXTRA_KEY in pairs:
        return pairs[EXTRA_KEY]
    for key, value in pairs.items():
        if value:
            try:
                pairs[key] = json.loads(value)
            except ValueError:
                pass
    return json.dumps(pairs)


def get_uri(conn: Conn) -> str:
    """Airflow's ``Connection.get_uri()``: what ``from_uri`` reads back to the same fields."""
    uri = f"{conn.conn_type.lower().replace('_', '-')}://" if conn.conn_type else "//"
    host, protocol = conn.host, None
    if conn.host and "://" in conn.host:
        protocol, bare = conn.host.split("://", 1)
        if protocol == conn.conn_type:
            protocol = None
        else:
            host = bare
    if protocol:
        uri += f"{protocol}://"
    authority = ""
    if conn.login is not None:
        authority += quote(conn.login, safe="")
    if conn.password is not None:
        authority += ":" + quote(conn.password, safe="")
    if authority:
        uri += authority + "@"
    host_block = quote(host, safe="") if host else ""
    if conn.port:
        host_block += f"@:{conn.port}" if not host_block and not authority else f":{conn.port}"
    if conn.schema:
        host_block += f"/{quote(conn.schema, safe='')}"
    uri += host_block
    if conn.extra:
        uri += ("?" if conn.schema else "/?") + _extra_query(conn)
    return uri


def _extra_query(conn: Conn) -> str:
    """The extra as plain query parameters when they read back the same, else ``__extra__``."""
    extra = conn.extra_dejson
    flat = all(isinstance(v, str) for v in extra.values())
    try:
        query = urlencode(extra)
    except TypeError:
        query = None
    if flat and query and extra == dict(parse_qsl(query, keep_blank_values=True)):
        return query
    return urlencode({EXTRA_KEY: conn.extra})


# --- JSON --------------------------------------------------------------------------------------
def from_json(text: str, conn_id: str | None = None) -> Conn:
    """Airflow's ``Connection.from_json``: an object of the fields; ``extra`` object or text."""
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"connection {conn_id!r}: not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise FormatError(f"connection {conn_id!r}: the JSON must be an object")
    unknown = sorted(set(fields) - _JSON_KEYS)
    if unknown:
        raise FormatError(f"connection {conn_id!r}: unknown field(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(_JSON_KEYS))}")
    extra = fields.pop("extra", None)
    if extra:
        fields["extra"] = extra if isinstance(extra, str) else json.dumps(extra)
    if fields.get("conn_type"):
        fields["conn_type"] = normalize_conn_type(fields["conn_type"])
    port = fields.pop("port", None)
    if port:
        fields["port"] = port
    return _connection(conn_id, fields)


def _connection(conn_id: str | None, fields: dict[str, Any]) -> Conn:
    """``Connection(conn_id, **fields)``: a URI or separate fields, never both."""
    uri = fields.pop("uri", None)
    if uri:
        mixed = sorted(k for k in fields if k != "description" and fields[k])
        if mixed:
            raise FormatError(f"connection {conn_id!r}: give a uri or the separate fields "
                              f"({', '.join(mixed)}), not both")
        return from_uri(uri, conn_id, fields.get("description"))
    return Conn(conn_id=conn_id, **fields)


def to_dict(conn: Conn) -> dict[str, Any]:
    """A connection as ``airflow connections export`` writes it (``extra`` as its JSON text)."""
    return {"conn_type": conn.conn_type, "description": conn.description, "login": conn.login,
            "password": conn.password, "host": conn.host, "port": conn.port,
            "schema": conn.schema, "extra": conn.extra}


# --- files of import / export -------------------------------------------------------------------
def read_secret_file(path: Path) -> dict[str, Any]:
    """A ``.env`` / ``.json`` / ``.yaml`` / ``.yml`` file's mapping, as Airflow's loader reads it.

    A ``.env`` file maps each key to the list of its values (a key may repeat).
    """
    ext = path.suffix.lower()
    if ext not in FILE_EXTENSIONS:
        raise FormatError(f"{path}: unsupported file format; the file must have one of the "
                          f"extensions {' '.join(sorted(FILE_EXTENSIONS))}")
    try:
        content = path.read_text()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot be read ({exc})") from None
    if ext == ".env":
        return _env_file(path, content)
    if not content:
        raise FormatError(f"{path}:1: the file is empty")
    if ext == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}:{exc.lineno}: {exc.msg}") from None
    else:
        data = _yaml_load(path, content)
    if not isinstance(data, dict):
        raise FormatError(f"{path}:1: the file should contain an object")
    return data


def _env_file(path: Path, content: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line_no, line in enumerate(content.splitlines(), 1):
        if not line or _COMMENT_RE.match(line):
            continue
        key, sep, value = line.partition("=")
        problem = ('the line should contain at least one equal sign ("=")' if not sep
                   else "the key is empty" if not key
                   else "the value is empty" if not value else None)
        if problem:
            raise FormatError(f"{path}:{line_no}: invalid line format: {problem}")
        found.setdefault(key, []).append(value)
    return found


def _yaml_load(path: Path, content: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(content, loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise FormatError(f"{path}:{line}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise FormatError(f"{path}: not YAML ({exc})") from None


def yaml_dump(data: Any) -> str:
    """As Airflow's ``yaml.dump``: the safe dumper, keys sorted."""
    import yaml

    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))


def single_values(path: Path, found: dict[str, Any], what: str) -> dict[str, Any]:
    """One value per key: a ``.env`` key given twice is refused, naming the keys."""
    repeated = sorted(k for k, v in found.items() if isinstance(v, list) and len(v) != 1
                      and path.suffix.lower() == ".env")
    if repeated:
        raise FormatError(f"{path}: multiple values for {what} {', '.join(repeated)}")
    if path.suffix.lower() == ".env":
        return {k: v[0] for k, v in found.items()}
    return dict(found)


def connections_from_file(path: Path) -> dict[str, Any]:
    """Each connection of an import file as given: a URI string or an object of its fields.

    As Airflow's loader, a list holds at most one (a ``.env`` key given twice is refused)
    and an empty one none. ``connection_from_value`` makes each a ``Conn``.
    """
    found: dict[str, Any] = {}
    for conn_id, value in read_secret_file(path).items():
        if isinstance(value, list):
            if len(value) > 1:
                raise FormatError(f"{path}: multiple values for connection {conn_id!r}")
            if not value:
                continue
            value = value[0]
        found[conn_id] = value
    return found


def connection_from_value(conn_id: str, value: Any) -> Conn:
    """Airflow's ``_create_connection``: a URI, or an object whose keys Connection accepts.

    A string holding a JSON object (how ``export --serialization-format json`` writes a
    ``.env`` line) is read as ``AIRFLOW_CONN_<ID>`` is: as JSON.
    """
    if isinstance(value, str):
        if value.lstrip().startswith("{"):
            return from_json(value, conn_id)
        return from_uri(value, conn_id)
    if not isinstance(value, dict):
        raise FormatError(f"connection {conn_id!r}: expected a URI string or an object, "
                          f"not {type(value).__name__}")
    illegal = sorted(set(value) - _CONNECTION_KEYS)
    if illegal:
        raise FormatError(f"connection {conn_id!r}: illegal key(s) {', '.join(illegal)}; "
                          f"allowed: {', '.join(sorted(_CONNECTION_KEYS))}")
    fields = dict(value)
    if "extra" in fields and "extra_dejson" in fields:
        raise FormatError(f"connection {conn_id!r}: extra and extra_dejson are mutually "
                          "exclusive")
    if "extra_dejson" in fields:
        fields["extra"] = json.dumps(fields.pop("extra_dejson"))
    if fields.pop("conn_id", conn_id) != conn_id:
        raise FormatError(f"connection {conn_id!r}: its conn_id field says "
                          f"{value['conn_id']!r}")
    return _connection(conn_id, fields)


def format_connections(conns: list[Conn], file_format: str, serialization: str = "uri") -> str:
    """The text ``airflow connections export`` writes: ``.json``, ``.yaml`` or ``.env``."""
    if file_format == ".env":
        render = get_uri if serialization == "uri" else (lambda c: json.dumps(to_dict(c)))
        return "".join(f"{c.conn_id}={render(c)}\n" for c in conns)
    by_id = {c.conn_id: to_dict(c) for c in conns}
    if file_format == ".yaml":
        return yaml_dump(by_id)
    return json.dumps(by_id, indent=2)


def variables_export(rows: list[tuple[str, str | None, str | None]]) -> dict[str, Any]:
    """``airflow variables export``'s object from ``(key, value, description)`` rows.

    A JSON value is written as JSON (a JSON string as the stored text), a described
    one as ``{"value": ..., "description": ...}``, so ``import`` reads it back the same.
    """
    out: dict[str, Any] = {}
    for key, text, description in rows:
        try:
            value = json.loads(text) if text is not None else None
        except ValueError:
            value = text
        if isinstance(value, str):
            value = text
        if description or (isinstance(value, dict) and "value" in value):
            out[key] = {"value": value, "description": description}
        else:
            out[key] = value
    return out


def variable_from_import(value: Any) -> tuple[str, str | None]:
    """``(stored text, description)`` of one imported variable, as ``variables import``.

    A string is stored as it is; any other value as its JSON (indent 2, as
    ``Variable.set(serialize_json=True)``); ``{"value": v, "description": d}`` describes it.
    """
    description = None
    if isinstance(value, dict) and "value" in value:
        value, description = value["value"], value.get("description")
    if isinstance(value, str):
        return value, description
    try:
        return json.dumps(value, indent=2), description
    except (TypeError, ValueError) as exc:
        raise FormatError(f"the value is not JSON-serializable ({exc})") from None
