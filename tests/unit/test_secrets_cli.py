"""``sluice variables`` / ``sluice connections`` / ``sluice rotate-fernet-key``, as a user runs them.

The commands run as real processes against a fresh database; what they store is read
back raw from the tables (Fernet tokens, never the plain secret). Connection URIs and
JSON are held to the cases of Airflow's own connection tests
(``airflow-core/tests/unit/always/test_connection.py``): the same URI gives the same
fields, and ``get_uri`` gives a URI that reads back to them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from shared import secret_formats as fmt
from tests.faults import free_port

pytestmark = pytest.mark.timeout(90)


# --- connection URIs and JSON: Airflow's cases --------------------------------------------------
# (uri, expected fields); a field not named is not checked
URI_CASES = [
    ("scheme://user:password@host%2Flocation:1234/schema",
     dict(conn_type="scheme", host="host/location", schema="schema", login="user",
          password="password", port=1234, extra=None)),
    ("scheme://user:password@host%2Flocation:1234/schema?extra1=a%20value&extra2=%2Fpath%2F",
     dict(host="host/location", extra_dejson={"extra1": "a value", "extra2": "/path/"})),
    ("scheme://user:password@host%2Flocation:1234/schema?__extra__=%7B%22my_val%22%3A+%5B%22list"
     "%22%2C+%22of%22%2C+%22values%22%5D%2C+%22extra%22%3A+%7B%22nested%22%3A+%7B%22json%22%3A+"
     "%22val%22%7D%7D%7D",
     dict(extra_dejson={"my_val": ["list", "of", "values"], "extra": {"nested": {"json": "val"}}})),
    ("scheme://user:password@host%2Flocation:1234/schema?extra1=a%20value&extra2=",
     dict(extra_dejson={"extra1": "a value", "extra2": ""})),
    ("scheme://user:password@host%2Flocation%3Ax%3Ay:1234/schema?extra1=a%20value&extra2=%2Fpath%2F",
     dict(host="host/location:x:y", port=1234, extra_dejson={"extra1": "a value",
                                                             "extra2": "/path/"})),
    ("scheme://user:password%20with%20space@host%2Flocation%3Ax%3Ay:1234/schema",
     dict(host="host/location:x:y", password="password with space")),
    ("scheme://domain%2Fuser:password@host%2Flocation%3Ax%3Ay:1234/schema",
     dict(login="domain/user", password="password")),
    ("scheme://user:password%20with%20space@host:1234/schema%2Ftest",
     dict(host="host", schema="schema/test", password="password with space")),
    ("scheme://user:password%20with%20space@host:1234",
     dict(host="host", schema="", port=1234)),
    ("google-cloud-platform://?key_path=%2Fkeys%2Fkey.json&scope=https%3A%2F%2Fwww.googleapis.com"
     "%2Fauth%2Fcloud-platform&project=airflow",
     dict(conn_type="google_cloud_platform", host="", schema="", login=None, password=None,
          port=None, extra_dejson={"key_path": "/keys/key.json", "project": "airflow",
                                   "scope": "https://www.googleapis.com/auth/cloud-platform"})),
    ("scheme://host:1234", dict(host="host", schema="", login=None, password=None, port=1234)),
    ("scheme://%2FTmP%2F:1234", dict(host="/TmP/", port=1234)),
    ("scheme:///airflow", dict(conn_type="scheme", schema="airflow")),
    ("scheme://@:1234", dict(port=1234)),
    ("scheme://:password%2F%21%40%23%24%25%5E%26%2A%28%29%7B%7D@",
     dict(password="password/!@#$%^&*(){}")),
    ("scheme://login%2F%21%40%23%24%25%5E%26%2A%28%29%7B%7D@", dict(login="login/!@#$%^&*(){}")),
    ("scheme://host/schema?valid_json=%7B%22key%22%3A%22val%22%7D&invalid_json=just_a_string"
     "&empty_val=",
     dict(host="host", schema="schema",
          extra_dejson={"valid_json": {"key": "val"}, "invalid_json": "just_a_string",
                        "empty_val": ""})),
    # auth info and hosts with their own protocol
    ("http://:password@host:80/database",
     dict(conn_type="http", login="", password="password", host="host", port=80,
          schema="database")),
    ("http://user:@host:80/database", dict(login="user", password=None, host="host")),
    ("http://user:password@/database", dict(host="", port=None, schema="database")),
    ("http://user:password@host:80/", dict(host="host", port=80, schema="")),
    ("postgresql://user:password@%2Ftmp%2Fz6rqdzqh%2Fexample%3Awest1%3Atestdb/testdb",
     dict(conn_type="postgres", host="/tmp/z6rqdzqh/example:west1:testdb", schema="testdb")),
    ("postgresql://%2Ftmp%2Fz6rqdzqh%2Fexample%3Aeurope-west1%3Atestdb",
     dict(login=None, host="/tmp/z6rqdzqh/example:europe-west1:testdb", schema="")),
    ("spark://k8s%3a%2F%2F100.68.0.1:443?deploy-mode=cluster",
     dict(conn_type="spark", host="k8s://100.68.0.1", port=443, schema="")),
    ("spark://user:password@k8s%3a%2F%2F100.68.0.1:443?deploy-mode=cluster",
     dict(login="user", password="password", host="k8s://100.68.0.1", port=443)),
    ("spark://k8s%3a%2F%2Fno.port.com?deploy-mode=cluster",
     dict(host="k8s://no.port.com", port=None)),
    ("spark://k8s://100.68.0.1:443", dict(host="k8s://100.68.0.1", port=443)),
]


def _fields(conn: fmt.Conn, expected: dict) -> dict:
    return {k: (conn.extra_dejson if k == "extra_dejson" else getattr(conn, k)) for k in expected}


@pytest.mark.parametrize(("uri", "expected"), URI_CASES, ids=[u for u, _ in URI_CASES])
def test_a_connection_uri_reads_as_airflow_reads_it(uri, expected):
    assert _fields(fmt.from_uri(uri, "c"), expected) == expected


@pytest.mark.parametrize(("uri", "expected"), URI_CASES, ids=[u for u, _ in URI_CASES])
def test_get_uri_reads_back_to_the_same_connection(uri, expected):
    first = fmt.from_uri(uri, "c")
    again = fmt.from_uri(fmt.get_uri(first), "c")
    assert again == first
    built = fmt.Conn(**{k: v for k, v in vars(first).items()})  # from fields, not a URI
    assert fmt.from_uri(fmt.get_uri(built), "c") == first


@pytest.mark.parametrize(("text", "field", "expected"), [
    ('{"extra": null}', "extra", None),
    ('{"extra": {"yo": "hi"}}', "extra", '{"yo": "hi"}'),
    ('{"extra": "{\\"yo\\": \\"hi\\"}"}', "extra", '{"yo": "hi"}'),
    ('{"conn_type": "abc-abc"}', "conn_type", "abc_abc"),
    ('{"conn_type": "postgresql"}', "conn_type", "postgres"),
    ('{"port": 1}', "port", 1), ('{"port": "1"}', "port", 1), ('{"port": ""}', "port", None),
    ('{"port": null}', "port", None),
    ('{"password": "pass :/!@#$%^&*(){}\\""}', "password", 'pass :/!@#$%^&*(){}"'),
    ('{"password": ""}', "password", None),
])
def test_connection_json_reads_as_airflow_reads_it(text, field, expected):
    assert getattr(fmt.from_json(text, "c"), field) == expected


@pytest.mark.parametrize("bad", ["a://b://c://d", "no-scheme-here", "s://h:99999",
                                 "s://h?__extra__=%5B1%5D"])
def test_a_uri_in_no_airflow_form_is_one_line(bad):
    with pytest.raises(fmt.FormatError) as err:
        fmt.from_uri(bad, "c")
    assert "\n" not in str(err.value)


# --- the commands -----------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def sluice(db_url, home):
    """Run ``sluice ARGS…`` as a process against the test's database; returns the result."""
    def run(*args: str, env: dict[str, str] | None = None, url: str | None = None):
        full = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLUICE_", "AIRFLOW_VAR_", "AIRFLOW_CONN_"))}
        full.update({"SLUICE_DATABASE_URL": url or db_url, "SLUICE_HOME": str(home)},
                    **(env or {}))
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], env=full,
                              capture_output=True, text=True, timeout=60)
    return run


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result, code: int) -> str:
    """The one line of a refusal, with its exit code."""
    assert (result.returncode, result.stdout) == (code, ""), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def key_of(home: Path) -> Fernet:
    return Fernet((home / "fernet.key").read_bytes())


async def test_variables_set_get_list_delete_encrypted_at_rest(sluice, db, home):
    assert ok(sluice("variables", "set", "api_key", "hunter2", "--description", "prod")) == \
        "Variable api_key created\n"
    ok(sluice("variables", "set", "config", '{"batch": [1, 2], "on": true}', "--json"))
    assert oct((home / "fernet.key").stat().st_mode & 0o777) == "0o600"

    raw = await db.fetchrow("SELECT val, description, is_encrypted FROM variable "
                            "WHERE key = 'api_key'")
    assert "hunter2" not in raw["val"] and raw["is_encrypted"] and raw["description"] == "prod"
    assert key_of(home).decrypt(raw["val"].encode()) == b"hunter2"

    assert ok(sluice("variables", "get", "api_key")) == "hunter2\n"
    assert json.loads(ok(sluice("variables", "get", "config", "--json"))) == \
        {"batch": [1, 2], "on": True}
    assert ok(sluice("variables", "get", "missing", "--default", "fallback")) == "fallback\n"
    assert refused(sluice("variables", "get", "missing"), 1) == "Variable missing does not exist."
    assert ok(sluice("variables", "get", "api_key",
                     env={"AIRFLOW_VAR_API_KEY": "from the environment"})) == \
        "from the environment\n"

    assert json.loads(ok(sluice("variables", "list", "-o", "json"))) == \
        [{"key": "api_key"}, {"key": "config"}]
    shown = json.loads(ok(sluice("variables", "list", "-o", "json", "--show-values")))
    assert shown[0] == {"key": "api_key", "val": "hunter2"}
    hidden = ok(sluice("variables", "list", "--show-values", "--hide-sensitive"))
    assert "hunter2" not in hidden and "***" in hidden
    refused(sluice("variables", "list", "--hide-sensitive"), 2)

    assert ok(sluice("variables", "delete", "api_key")) == "Variable api_key deleted\n"
    assert refused(sluice("variables", "delete", "api_key"), 1) == \
        "Variable api_key does not exist."
    assert refused(sluice("variables", "set", "x", "{not json", "--json"), 2).startswith(
        "variable 'x': --json was given but VALUE is not JSON")


async def test_variables_export_and_import_in_airflows_format(sluice, db, tmp_path):
    ok(sluice("variables", "set", "plain", "text"))
    ok(sluice("variables", "set", "described", "v", "--description", "what it is"))
    ok(sluice("variables", "set", "obj", '{"a": 1}', "--json"))
    out = tmp_path / "vars.json"
    assert ok(sluice("variables", "export", str(out))) == \
        f"3 Variables successfully exported to {out}.\n"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    exported = {"described": {"description": "what it is", "value": "v"}, "obj": {"a": 1},
                "plain": "text"}
    assert out.read_text() == json.dumps(exported, sort_keys=True, indent=4)

    assert refused(sluice("variables", "import", str(out), "-a", "fail"), 1).startswith(
        "Failed. These keys: ['described', 'obj', 'plain'] already exists.")
    await db.execute("DELETE FROM variable")
    assert ok(sluice("variables", "import", str(out))) == \
        "3 of 3 variables successfully updated.\n"
    assert json.loads(ok(sluice("variables", "get", "obj", "-j"))) == {"a": 1}
    assert await db.fetchval("SELECT description FROM variable WHERE key = 'described'") == \
        "what it is"

    env_file = tmp_path / "more.env"
    env_file.write_text("# a comment\nplain=changed\nnew=x=y\n")
    assert "were skipped" in ok(sluice("variables", "import", str(env_file), "-a", "skip"))
    assert ok(sluice("variables", "get", "plain")) == "text\n"
    assert ok(sluice("variables", "get", "new")) == "x=y\n"
    yaml_file = tmp_path / "more.yaml"
    yaml_file.write_text("plain: changed\nlisted: [1, 2]\n")
    ok(sluice("variables", "import", str(yaml_file)))
    assert ok(sluice("variables", "get", "plain")) == "changed\n"
    assert json.loads(ok(sluice("variables", "get", "listed", "--json"))) == [1, 2]

    (tmp_path / "bad.env").write_text("a=1\nb\n")
    assert refused(sluice("variables", "import", str(tmp_path / "bad.env")), 2).endswith(
        "bad.env:2: invalid line format: the line should contain at least one equal sign (\"=\")")
    assert "unsupported file format" in refused(
        sluice("variables", "import", str(tmp_path / "vars.txt")), 2)


async def test_connections_add_from_uri_json_and_fields_are_encrypted_at_rest(sluice, db, home):
    uri = "postgresql://etl%40corp:s%3Ac%2Fret@db.example:5432/sales?sslmode=require&timeout=10"
    added = ok(sluice("connections", "add", "warehouse", "--conn-uri", uri))
    assert added.startswith("Successfully added `conn_id`=warehouse\n") and "s:c/ret" not in added
    ok(sluice("connections", "add", "api", "--conn-json",
              '{"conn_type": "http", "host": "api.example", "password": "tok-secret", '
              '"extra": {"token": "xyz-secret", "timeout": 3}}'))
    added = ok(sluice("connections", "add", "aws", "--conn-type", "aws", "--conn-login", "AKIA",
                      "--conn-password", "aws-secret", "--conn-port", "443",
                      "--conn-extra", '{"region_name": "eu-west-1"}',
                      "--conn-description", "prod account"))
    assert "aws-secret" not in added

    got = json.loads(ok(sluice("connections", "get", "warehouse", "-o", "json")))[0]
    assert {k: got[k] for k in ("conn_type", "host", "schema", "login", "password", "port")} == \
        {"conn_type": "postgres", "host": "db.example", "schema": "sales", "login": "etl@corp",
         "password": "s:c/ret", "port": 5432}
    assert got["extra_dejson"] == {"sslmode": "require", "timeout": 10}
    assert fmt.from_uri(got["get_uri"], "warehouse") == fmt.from_uri(uri, "warehouse")
    api = json.loads(ok(sluice("connections", "get", "api", "-o", "json")))[0]
    assert (api["password"], api["extra_dejson"]) == \
        ("tok-secret", {"token": "xyz-secret", "timeout": 3})
    aws = json.loads(ok(sluice("connections", "get", "aws", "-o", "json")))[0]
    assert (aws["login"], aws["port"], aws["description"]) == ("AKIA", 443, "prod account")

    fernet = key_of(home)
    for row in await db.fetch("SELECT * FROM connection"):
        text = json.dumps({k: str(v) for k, v in dict(row).items()})
        assert not any(s in text for s in ("s:c/ret", "tok-secret", "xyz-secret", "aws-secret"))
        assert fernet.decrypt(row["password"].encode())
        assert fernet.decrypt(row["extra"].encode())

    listed = json.loads(ok(sluice("connections", "list", "-o", "json")))
    assert listed == [{"conn_id": "api", "conn_type": "http"},
                      {"conn_id": "aws", "conn_type": "aws"},
                      {"conn_id": "warehouse", "conn_type": "postgres"}]
    masked = ok(sluice("connections", "list", "--show-values", "--hide-sensitive", "-o", "json"))
    assert not any(s in masked for s in ("s:c/ret", "tok-secret", "xyz-secret", "aws-secret"))
    assert "postgres://***:***@db.example:5432/sales" in masked

    assert refused(sluice("connections", "add", "api", "--conn-type", "http"), 1) == \
        "A connection with `conn_id`=api already exists."
    assert refused(sluice("connections", "get", "nope"), 1) == "Connection nope not found."
    env_uri = "mysql://reader:pw@replica:3306/app"
    from_env = json.loads(ok(sluice("connections", "get", "api", "-o", "json",
                                    env={"AIRFLOW_CONN_API": env_uri})))[0]
    assert (from_env["conn_type"], from_env["host"]) == ("mysql", "replica")
    assert ok(sluice("connections", "delete", "api")) == \
        "Successfully deleted connection with `conn_id`=api\n"
    assert refused(sluice("connections", "delete", "api"), 1) == \
        "Did not find a connection with `conn_id`=api"


@pytest.mark.parametrize(("args", "said"), [
    (["c"], "Must supply either conn-uri or conn-json if not supplying conn-type"),
    (["c", "--conn-uri", "a://h", "--conn-json", "{}"], "Cannot supply both conn-uri and conn-json"),
    (["c", "--conn-uri", "a://h", "--conn-host", "x"],
     "The following args are not compatible with the --conn-uri flag: ['conn_host']"),
    (["c", "--conn-json", '{"host": "h"}'], "conn-json is invalid; must supply conn-type"),
    (["c", "--conn-uri", "no-scheme"],
     "invalid connection URI: it has no scheme (the connection type)"),
    (["c", "--conn-type", "http", "--conn-extra", "[1]"], "connection 'c': extra must be a JSON object"),
    (["c", "--conn-type", "http", "--conn-port", "eighty"],
     "connection 'c': port must be an integer, not 'eighty'"),
    (["bad id", "--conn-type", "http"], "Could not create connection. connection id 'bad id' has "
     "to be made of alphanumeric characters, dashes, dots and underscores exclusively"),
])
async def test_connections_add_refuses_what_airflow_refuses(sluice, db, args, said):
    assert refused(sluice("connections", "add", *args), 2) == said
    assert await db.fetchval("SELECT count(*) FROM connection") == 0


@pytest.mark.parametrize(("file_format", "serialization"), [
    ("json", None), ("yaml", None), ("env", "uri"), ("env", "json")])
async def test_connections_export_then_import_gives_the_same_connections(
        sluice, db, tmp_path, file_format, serialization):
    ok(sluice("connections", "add", "pg", "--conn-uri",
              "postgres://u:p%40ss@h:5432/db?sslmode=require"))
    ok(sluice("connections", "add", "nested", "--conn-json",
              '{"conn_type": "http", "host": "https://api.example", "login": "me", '
              '"password": "pw word", "extra": {"headers": {"X-A": "1"}, "retries": 3}}'))
    ok(sluice("connections", "add", "bare", "--conn-type", "fs"))
    before = json.loads(ok(sluice("connections", "list", "--show-values", "-o", "json")))

    out = tmp_path / f"conns.{file_format}"
    extra_args = ["--serialization-format", serialization] if serialization else []
    assert ok(sluice("connections", "export", str(out), *extra_args)) == \
        f"3 Connections successfully exported to {out}.\n"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    if file_format == "json":
        assert json.loads(out.read_text())["pg"] == {
            "conn_type": "postgres", "description": None, "login": "u", "password": "p@ss",
            "host": "h", "port": 5432, "schema": "db", "extra": '{"sslmode": "require"}'}
    if serialization == "uri":
        assert "pg=postgres://u:p%40ss@h:5432/db?sslmode=require\n" in out.read_text()

    assert ok(sluice("connections", "import", str(out))) == "".join(
        f"Could not import connection {c}: connection already exists.\n"
        for c in ("bare", "nested", "pg"))
    await db.execute("DELETE FROM connection")
    assert ok(sluice("connections", "import", str(out))) == \
        "Imported connection bare\nImported connection nested\nImported connection pg\n"
    after = json.loads(ok(sluice("connections", "list", "--show-values", "-o", "json")))
    if serialization == "uri":  # as in Airflow, a URI has no None host or schema, only ""
        for conn in before:
            conn.update(host=conn["host"] or "", schema=conn["schema"] or "")
    assert after == before


async def test_connections_import_reads_airflows_file_shapes(sluice, db, tmp_path):
    (tmp_path / "c.yaml").write_text(
        "from_uri: mysql://a:b@h:1/s\n"
        "from_fields:\n  conn_type: http\n  host: h\n  extra_dejson: {k: v}\n"
        "from_list: [ 'ftp://f' ]\n"
        "bad.id!: x://y\n")
    said = ok(sluice("connections", "import", str(tmp_path / "c.yaml")))
    assert said.splitlines()[0].startswith("Could not import connection. connection id 'bad.id!'")
    fields = json.loads(ok(sluice("connections", "get", "from_fields", "-o", "json")))[0]
    assert (fields["conn_type"], fields["extra_dejson"]) == ("http", {"k": "v"})
    assert json.loads(ok(sluice("connections", "get", "from_list", "-o", "json")))[0][
        "conn_type"] == "ftp"
    (tmp_path / "c.json").write_text('{"x": {"conn_type": "a", "surprise": 1}}')
    assert "illegal key(s) surprise" in refused(
        sluice("connections", "import", str(tmp_path / "c.json"), "--overwrite"), 2)
    (tmp_path / "twice.env").write_text("a=x://1\na=x://2\n")
    assert "multiple values for connection 'a'" in refused(
        sluice("connections", "import", str(tmp_path / "twice.env")), 2)


async def test_rotate_fernet_key_keeps_every_value_readable_under_the_new_key(sluice, db):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with_old = {"SLUICE_FERNET_KEY": old}
    ok(sluice("variables", "set", "v", "value-1", env=with_old))
    ok(sluice("connections", "add", "c", "--conn-uri", "http://u:pw-1@h/?a=b", env=with_old))

    said = ok(sluice("rotate-fernet-key", env={"SLUICE_FERNET_KEY": f"{new},{old}"}))
    assert said == "Encrypted 1 variable(s) and 1 connection(s) again with the first Fernet key.\n"
    token = await db.fetchval("SELECT val FROM variable WHERE key = 'v'")
    password = await db.fetchval("SELECT password FROM connection WHERE conn_id = 'c'")
    assert Fernet(new).decrypt(token.encode()) == b"value-1"
    assert Fernet(new).decrypt(password.encode()) == b"pw-1"
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(token.encode())

    only_new = {"SLUICE_FERNET_KEY": new}
    assert ok(sluice("variables", "get", "v", env=only_new)) == "value-1\n"
    got = json.loads(ok(sluice("connections", "get", "c", "-o", "json", env=only_new)))[0]
    assert (got["password"], got["extra_dejson"]) == ("pw-1", {"a": "b"})
    assert refused(sluice("variables", "get", "v", env=with_old), 2) == \
        "a stored secret does not decrypt with the configured Fernet key(s)"
    line = refused(sluice("variables", "get", "v", env={"SLUICE_FERNET_KEY": "not-a-key"}), 2)
    assert "not a Fernet key" in line and "not-a-key" not in line


def test_an_unreachable_database_is_one_line_without_its_password(sluice):
    url = f"postgresql://sluice:pw-secret@127.0.0.1:{free_port()}/sluice"
    commands = (["variables", "get", "v"], ["connections", "list"], ["variables", "set", "v", "x"])
    with ThreadPoolExecutor(len(commands)) as pool:  # at once: each retries for a few seconds
        results = list(pool.map(lambda args: sluice(*args, url=url), commands))
    for result in results:
        line = refused(result, 2)
        assert line.startswith("database at postgresql://sluice:***@127.0.0.1:") and \
            "pw-secret" not in line
