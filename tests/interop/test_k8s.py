"""The Kubernetes sidecar example, contrib/k8s (README.md, "Kubernetes:
feedguardd as a sidecar"), checked without a cluster: there is none here,
and kubectl, where it is installed, cannot validate without an API server.

Every YAML file under contrib/k8s is parsed, and so is what render.sh
prints (the manifests to apply: the immutable ConfigMap named by the hash
of its data, the Deployment naming it, the Service, the NetworkPolicy).
Then what matters is
asserted against the config the ConfigMap carries, read as feedguardd
reads it: both containers in one pod; probes on /healthz and /readyz at
the admin port the config sets, on an address the kubelet can reach; a
grace period above readiness_delay + drain and a ranker that outlives the
drain; scrape annotations at the admin port; every file the config and the
policy name provided by the pod's mounts, from the ConfigMap's and the
Secret's keys, and the Secret's keys those of the README's `kubectl create
secret` command; the ConfigMap's name that of its data's hash, immutable,
and the one name the Deployment refers to; the README's command that
deletes old ConfigMaps (run against a stub kubectl); the security context;
a memory limit that covers the README's bound for the config.

The strongest check runs `feedguardd -t` on the ConfigMap's feedguard.yaml
and policy laid out in a temp dir as the pod mounts them, with a descriptor
set ($FG_RANKING_PB) and a generated key and password.  The one change to
their text: the mount root /etc/feedguard/ becomes the temp dir's
etc/feedguard/ (the pod's config names absolute paths).
"""
import base64
import hashlib
import os
import re
import shutil
import subprocess

import pytest
import yaml

import policyhelp as ph
from harness import SRCDIR, run_feedguardd

K8S = SRCDIR / "contrib" / "k8s"
RENDER = K8S / "render.sh"
README = SRCDIR / "README.md"
UK_CHILDREN = SRCDIR / "policies" / "uk-children.yaml"
MOUNT_ROOT = "/etc/feedguard/"
CONFIG_PATH = MOUNT_ROOT + "feedguard.yaml"
CM_PREFIX = "feedguard-config-"
CM_COMPONENT = ("app.kubernetes.io/component", "feedguard-config")   # render.sh's label
OLD_HASH_ANNOTATION = "checksum/feedguard-config"

# The README's memory bound ("Memory: what a client can make feedguardd
# hold"), with the assumptions the Kubernetes section states: the idle
# daemon (9.7MiB of RSS with 2 workers and the UK policy on jemalloc, 7.3
# on glibc, measured), per
# worker the filter's 1.5MiB, state.max_pending x 2KiB for Redis and the
# ended calls' pipelines kept for reuse (16MiB, "Kept for reuse"), and
# BUSY_CONNECTIONS client connections each holding a message past its
# budget and what their streams' windows let through (M + S x W).
MIB = 1024 * 1024
BASE = 10 * MIB
FILTER_PER_WORKER = 3 * MIB // 2
REDIS_PER_PENDING = 2 * 1024
KEPT_PER_WORKER = 16 * MIB
BUSY_CONNECTIONS = 32


# ---------------------------------------------------------------- reading

def render(*args):
    res = subprocess.run(["sh", str(RENDER)] + [str(a) for a in args], capture_output=True,
                         timeout=30)
    assert res.returncode == 0, "render.sh %s: exit %d\n%s" % (" ".join(map(str, args)),
                                                               res.returncode, res.stderr.decode())
    return res.stdout.decode()


def split_documents(text):
    """The YAML documents of a stream, as text (render.sh separates them by
    a line '---')."""
    return [d for d in re.split(r"^---[ \t]*\n", text, flags=re.M) if d.strip()]


def by_kind(docs):
    out = {}
    for d in docs:
        assert d["kind"] not in out, "two %s documents" % d["kind"]
        out[d["kind"]] = d
    return out


DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
QUANTITY_UNITS = {"": 1, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}


def seconds(text, default):
    """A feedguard duration ("10s", "1.5s", "2m") in seconds."""
    if text is None:
        return default
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h|d)", str(text))
    assert m, "not a duration: %r" % text
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def size(text, default):
    if text is None:
        return default
    m = re.fullmatch(r"([0-9]+)(B|KiB|MiB|GiB)", str(text))
    assert m, "not a size: %r" % text
    return int(m.group(1)) * SIZE_UNITS[m.group(2)]


def quantity(text):
    """A Kubernetes memory quantity ("256Mi") in bytes."""
    m = re.fullmatch(r"([0-9]+)(|Ki|Mi|Gi)", str(text))
    assert m, "not a memory quantity: %r" % text
    return int(m.group(1)) * QUANTITY_UNITS[m.group(2)]


def cpus(text):
    m = re.fullmatch(r"([0-9]+)(m?)", str(text))
    assert m, "not a CPU quantity: %r" % text
    return int(m.group(1)) / (1000 if m.group(2) else 1)


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def host_of(addr):
    return str(addr).rsplit(":", 1)[0].strip("[]")


class Example:
    """contrib/k8s as render.sh prints it, and the config and policy its
    ConfigMap carries (parsed, and as text)."""

    def __init__(self):
        self.text = render()
        self.doc_texts = split_documents(self.text)
        self.docs = [yaml.safe_load(t) for t in self.doc_texts]
        self.kinds = by_kind(self.docs)
        self.cm = self.kinds["ConfigMap"]
        self.deploy = self.kinds["Deployment"]
        self.pod = self.deploy["spec"]["template"]["spec"]
        self.containers = {c["name"]: c for c in self.pod["containers"]}
        self.fg = self.containers["feedguardd"]
        self.volumes = {v["name"]: v for v in self.pod["volumes"]}
        self.config_text = self.cm["data"]["feedguard.yaml"]
        self.config = yaml.safe_load(self.config_text)
        self.files = self.mounted_files(self.fg)
        self.policy_text = self.cm["data"][self.files[self.config["policy"]][2]]
        self.policy = yaml.safe_load(self.policy_text)

    def mounted_files(self, container):
        """{absolute path in the container: (source kind, source name, key)}
        of the files its volumes provide from ConfigMaps and Secrets."""
        out = {}
        for vm in container.get("volumeMounts", []):
            vol = self.volumes[vm["name"]]
            root = vm["mountPath"].rstrip("/") + "/"
            if "projected" in vol:
                sources = [(k, s[k]) for s in vol["projected"]["sources"] for k in s]
            else:
                sources = [(k, vol[k]) for k in ("configMap", "secret") if k in vol]
            for kind, src in sources:
                name = src.get("name") or src.get("secretName")
                assert src.get("items"), ("%s %s: list its keys (items), so a missing key "
                                          "fails the mount instead of the daemon" % (kind, name))
                for it in src["items"]:
                    path = root + it["path"]
                    assert path not in out, "%s is mounted twice" % path
                    out[path] = (kind, name, it["key"])
        return out

    def admin_port(self):
        return port_of(self.config["admin"]["listen"])

    def container_port(self, container, port):
        """A probe's or Service's port (a number or a container port's
        name) as a number."""
        if isinstance(port, int):
            return port
        named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
        assert named, "container %s has no port named %r" % (container["name"], port)
        return named[0]


@pytest.fixture(scope="module")
def ex():
    if shutil.which("sh") is None:
        pytest.skip("no sh")
    return Example()


# ---------------------------------------------------------------- parsing

def test_every_yaml_file_parses():
    files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))
    assert {f.name for f in files} >= {"feedguard.yaml", "deployment.yaml", "service.yaml",
                                       "networkpolicy.yaml"}, files
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs, "%s holds no YAML document" % f
        for d in docs:
            assert isinstance(d, dict), "%s: a document is not a mapping" % f
            if f.name != "feedguard.yaml":
                assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), \
                    "%s: a manifest without apiVersion, kind or metadata.name" % f


def test_render_prints_the_manifests_to_apply(ex):
    assert [d["kind"] for d in ex.docs] == ["ConfigMap", "Deployment", "Service", "NetworkPolicy"]
    assert "@CONFIG_HASH@" not in ex.text
    assert re.fullmatch(re.escape(CM_PREFIX) + "[0-9a-f]{16}", ex.cm["metadata"]["name"]), \
        ex.cm["metadata"]["name"]
    # The ConfigMap carries the files as they are: the config byte for byte,
    # the policy with only its descriptor_set line rewritten to the Secret's.
    assert ex.config_text == (K8S / "feedguard.yaml").read_text()
    src = UK_CHILDREN.read_text().splitlines(True)
    got = ex.policy_text.splitlines(True)
    assert len(src) == len(got)
    differ = [(a, b) for a, b in zip(src, got) if a != b]
    assert len(differ) == 1 and differ[0][0].startswith("descriptor_set:"), differ
    assert ex.policy["descriptor_set"] == MOUNT_ROOT + "secret/ranking.pb"


# ---------------------------------------------------------------- the pod

def test_both_containers_in_one_pod(ex):
    assert ex.deploy["apiVersion"] == "apps/v1"
    assert set(ex.containers) == {"feedguardd", "ranker"}
    sel = ex.deploy["spec"]["selector"]["matchLabels"]
    labels = ex.deploy["spec"]["template"]["metadata"]["labels"]
    assert sel.items() <= labels.items()
    # feedguardd's upstream is the ranker beside it, on the pod's loopback.
    assert host_of(ex.config["upstream"]["address"]) == "127.0.0.1"
    assert ex.fg["args"] == ["-c", CONFIG_PATH]
    assert CONFIG_PATH in ex.files and ex.files[CONFIG_PATH][2] == "feedguard.yaml"
    # Clients come to the pod's IP on feedguardd's port.
    listen = ex.config["listen"]
    assert host_of(listen) in ("*", "0.0.0.0", "::"), listen
    assert ex.container_port(ex.fg, "grpc") == port_of(listen)


def test_probes_at_the_admin_port(ex):
    # The kubelet probes the pod's IP from the node: admin.listen must not
    # be loopback (its default, 127.0.0.1:9901).
    assert host_of(ex.config["admin"]["listen"]) in ("0.0.0.0", "::"), ex.config["admin"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = ex.fg[probe]["httpGet"]
        assert get["path"] == path, (probe, get)
        assert ex.container_port(ex.fg, get["port"]) == ex.admin_port(), (probe, get)
        assert get.get("scheme", "HTTP") == "HTTP"
    # /readyz turns 503 at SIGTERM: the probe sees it within readiness_delay,
    # before feedguardd stops accepting.
    rp = ex.fg["readinessProbe"]
    delay = seconds(ex.config.get("timeouts", {}).get("readiness_delay"), 0)
    assert rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3) <= delay, (rp, delay)


def test_grace_period_covers_the_drain(ex):
    t = ex.config.get("timeouts", {})
    delay, drain = seconds(t.get("readiness_delay"), 0), seconds(t.get("drain"), 30)
    assert delay > 0, "readiness_delay 0: clients still routed to a pod that stopped accepting"
    grace = ex.pod["terminationGracePeriodSeconds"]
    assert grace >= delay + drain + 10, (grace, delay, drain)
    # The ranker must serve until feedguardd has drained: its preStop
    # delays its SIGTERM at least that long, and ends before the grace
    # period with time for the ranker's own stop.
    sleep = ex.containers["ranker"]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert delay + drain <= sleep <= grace - 10, (delay, drain, sleep, grace)
    # feedguardd itself gets SIGTERM at once: readiness_delay is its wait.
    assert "preStop" not in ex.fg.get("lifecycle", {})


def test_scrape_annotations_match_the_admin_port(ex):
    ann = ex.deploy["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(ex.admin_port())
    assert ann["prometheus.io/path"] == "/metrics"
    assert all(isinstance(v, str) for v in ann.values()), ann


def test_service_and_network_policy_ports(ex):
    svc, np = ex.kinds["Service"], ex.kinds["NetworkPolicy"]
    labels = ex.deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = [ex.container_port(ex.fg, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]]
    # Clients get feedguardd only: not the admin endpoint, not the ranker.
    assert ports == [port_of(ex.config["listen"])], ports
    assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    np_ports = sorted(p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"])
    assert np_ports == sorted([port_of(ex.config["listen"]), ex.admin_port()])
    admin_rules = [r for r in np["spec"]["ingress"]
                   if [p["port"] for p in r["ports"]] == [ex.admin_port()]]
    assert admin_rules and admin_rules[0].get("from"), "the admin port is open to every source"


def config_paths(ex):
    """The files feedguard.yaml and the policy name, as the pod sees them."""
    c = ex.config
    paths = {"policy": c["policy"], "policy descriptor_set": ex.policy["descriptor_set"]}
    for k in c.get("pseudonym_keys", []):
        paths["pseudonym key %s" % k["id"]] = k["file"]
    if c.get("state", {}).get("password_file"):
        paths["state.password_file"] = c["state"]["password_file"]
    if c.get("capture"):
        paths["capture.key"] = c["capture"]["key"]["file"]
    return paths


def test_mounts_provide_every_file_the_config_names(ex):
    for what, path in config_paths(ex).items():
        assert path.startswith(MOUNT_ROOT), "%s %s is outside the mount" % (what, path)
        assert path in ex.files, "%s %s: no volume item provides it (%s)" % (what, path,
                                                                             sorted(ex.files))
    # The policy and config come from the ConfigMap, keys and the descriptor
    # set from the Secret; the ConfigMap has the keys the items name.
    kinds = {p: ex.files[p][0] for p in config_paths(ex).values()}
    assert kinds.pop(ex.config["policy"]) == "configMap"
    assert set(kinds.values()) == {"secret"}, kinds
    cm_keys = {key for kind, name, key in ex.files.values() if kind == "configMap"}
    assert cm_keys == set(ex.cm["data"]), (cm_keys, set(ex.cm["data"]))
    assert {name for kind, name, _ in ex.files.values() if kind == "configMap"} == \
        {ex.cm["metadata"]["name"]}
    # Every Secret item is a file the config uses: a key listed but unused
    # would make the operator create it for nothing.
    secret_paths = {p for p, v in ex.files.items() if v[0] == "secret"}
    assert secret_paths == set(config_paths(ex).values()) - {ex.config["policy"]}
    mount = [m for m in ex.fg["volumeMounts"] if m["mountPath"].rstrip("/") + "/" == MOUNT_ROOT]
    assert mount and mount[0].get("readOnly") is True


def readme_k8s_section():
    text = README.read_text()
    m = re.search(r"^### Kubernetes: feedguardd as a sidecar\n(.*?)(?=^## |^### )", text,
                  flags=re.M | re.S)
    assert m, "README has no '### Kubernetes: feedguardd as a sidecar' section"
    return m.group(1)


def readme_secret_command():
    """The README's `kubectl create secret generic NAME --from-file=KEY=PATH
    ...` command: (name, {key: path})."""
    sec = readme_k8s_section()
    m = re.search(r"^kubectl create secret generic (\S+)((?:[ \t]*\\?\n?[ \t]*--from-file=\S+)+)",
                  sec, flags=re.M)
    assert m, "the README's Kubernetes section has no 'kubectl create secret generic' command"
    files = dict(f.split("=", 1) for f in re.findall(r"--from-file=(\S+)", m.group(2)))
    return m.group(1), files


def test_readme_secret_command_makes_the_keys_the_pod_mounts(ex):
    name, files = readme_secret_command()
    items = {key for kind, n, key in ex.files.values() if kind == "secret"}
    assert {n for kind, n, _ in ex.files.values() if kind == "secret"} == {name}
    assert set(files) == items, (files, items)


def test_secret_command_with_kubectl(ex, tmp_path):
    """Where kubectl is installed, the README's command (with the files
    made here) gives a Secret with those keys, binary data intact."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed")
    name, files = readme_secret_command()
    content = {k: os.urandom(32) for k in files}
    content["ranking.pb"] = ph.ranking_pb().read_bytes()
    args = []
    for k in files:
        (tmp_path / k).write_bytes(content[k])
        args.append("--from-file=%s=%s" % (k, tmp_path / k))
    res = subprocess.run([kubectl, "create", "secret", "generic", name] + args
                         + ["--dry-run=client", "-o", "yaml"], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    secret = yaml.safe_load(res.stdout)
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == content


def configmap_refs(node):
    """The names of the ConfigMaps a manifest (or part of one) refers to:
    configMap volumes and projected sources, configMapRef (envFrom) and
    configMapKeyRef (env), wherever they sit."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("configMap", "configMapRef", "configMapKeyRef") and isinstance(v, dict):
                out.append(v.get("name"))
            out += configmap_refs(v)
    elif isinstance(node, list):
        for v in node:
            out += configmap_refs(v)
    return out


def data_hash(cm_text):
    """What render.sh hashes for the name: the ConfigMap's text from its
    'data:' line (the last key) to the end."""
    m = re.search(r"^data:\n.*", cm_text, flags=re.M | re.S)
    assert m, "the ConfigMap has no top-level 'data:' line"
    assert not re.search(r"^\S", m.group(0)[len("data:\n"):], flags=re.M), \
        "'data:' is not the ConfigMap's last key"
    return hashlib.sha256(m.group(0).encode()).hexdigest()[:16]


def test_config_map_name_carries_the_hash(ex):
    name = ex.cm["metadata"]["name"]
    assert name == CM_PREFIX + data_hash(ex.doc_texts[0]), name
    # Immutable: the kubelet never rewrites a running pod's files, so a
    # container restarting in an old pod keeps the config it started with.
    assert ex.cm.get("immutable") is True, ex.cm.get("immutable")
    # The Deployment refers to that ConfigMap and no other, so a new config
    # is a new pod template; the hash annotation that used to do this is gone.
    assert configmap_refs(ex.deploy) == [name], configmap_refs(ex.deploy)
    ann = ex.deploy["spec"]["template"]["metadata"].get("annotations", {})
    assert not [k for k in ann if k.startswith("checksum/")], ann
    # The labels the README's clean-up selects on.
    assert ex.cm["metadata"]["labels"].get(CM_COMPONENT[0]) == CM_COMPONENT[1]


def test_config_map_name_changes_with_the_config_and_the_policy(ex, tmp_path):
    cfg = tmp_path / "feedguard.yaml"
    cfg.write_text((K8S / "feedguard.yaml").read_text().replace("level: info", "level: warn"))
    pol = tmp_path / "policy.yaml"
    pol.write_text(UK_CHILDREN.read_text().replace("per_day: 20", "per_day: 15"))
    assert cfg.read_text() != (K8S / "feedguard.yaml").read_text()
    assert pol.read_text() != UK_CHILDREN.read_text()
    old = ex.cm["metadata"]["name"]
    seen = {old}
    for args in (("-c", cfg), ("-p", pol)):
        texts = split_documents(render(*args))
        kinds = by_kind([yaml.safe_load(t) for t in texts])
        cm, deploy = kinds["ConfigMap"], kinds["Deployment"]
        new = cm["metadata"]["name"]
        assert new not in seen, args
        seen.add(new)
        assert new == CM_PREFIX + data_hash(texts[0]), args
        assert cm.get("immutable") is True, args
        assert configmap_refs(deploy) == [new], (args, configmap_refs(deploy))
        # That name is the Deployment's one change: what rolls the pods.
        assert texts[1] != ex.doc_texts[1], args
        assert texts[1].replace(new, old) == ex.doc_texts[1], args
    # The same input, the same text: applying twice rolls nothing.
    assert render() == ex.text


def test_a_config_naming_the_policy_elsewhere_is_refused(tmp_path):
    """The pod mounts the policy as policy/policy.yaml: a config of one's
    own (-c) still naming policy/uk-children.yaml (the name before
    2026-12-07) would start no pod; render.sh says so instead."""
    cfg = tmp_path / "feedguard.yaml"
    text = (K8S / "feedguard.yaml").read_text()
    assert "policy: /etc/feedguard/policy/policy.yaml" in text
    cfg.write_text(text.replace("policy/policy.yaml", "policy/uk-children.yaml"))
    res = subprocess.run(["sh", str(RENDER), "-c", str(cfg)], capture_output=True, timeout=30)
    assert res.returncode == 1 and res.stdout == b"", res
    assert b"policy: /etc/feedguard/policy/policy.yaml" in res.stderr, res.stderr


def test_another_policy_is_what_the_pod_reads_under_a_neutral_name(ex, tmp_path):
    # -p other.yaml used to ship under the key and path uk-children.yaml:
    # the pod ran the other policy, and every error and log line named
    # the UK one.
    pol = tmp_path / "acme-teens.yaml"
    pol.write_text(UK_CHILDREN.read_text().replace("per_day: 20", "per_day: 7"))
    kinds = by_kind([yaml.safe_load(t) for t in split_documents(render("-p", pol))])
    cm, deploy = kinds["ConfigMap"], kinds["Deployment"]
    config = yaml.safe_load(cm["data"]["feedguard.yaml"])
    fg = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == ex.fg["name"]][0]
    kind, _, key = ex.mounted_files(fg)[config["policy"]]
    assert kind == "configMap"
    assert "uk-children" not in key and "uk-children" not in config["policy"], (key, config["policy"])
    assert "per_day: 7" in cm["data"][key] and "per_day: 20" not in cm["data"][key]


CLEANUP_START = "kubectl rollout status deployment/ranker &&"

STUB_KUBECTL = """#!/bin/sh
echo "$*" >>"$STUB_LOG"
case "$1 $2" in
"rollout status") exit 0 ;;
"get replicasets") [ -z "$STUB_RS_FAIL" ] || exit 1; printf '%s' "$STUB_RS" ;;
"get configmaps") printf '%s\\n' $STUB_CMS ;;
"delete "*) ;;
*) echo "stub kubectl: unexpected: $*" >&2; exit 3 ;;
esac
"""


def readme_cleanup():
    """The README's shell snippet that deletes the old ConfigMaps."""
    blocks = re.findall(r"^```sh\n(.*?)^```", readme_k8s_section(), flags=re.M | re.S)
    found = [b for b in blocks if b.startswith(CLEANUP_START)]
    assert len(found) == 1, "the README's Kubernetes section has no one clean-up command"
    return found[0]


def jsonpath(node, path):
    """The values at a kubectl JSONPath of dotted names and [*] (what the
    clean-up uses), missing keys skipped as kubectl get skips them."""
    nodes = [node]
    for part in re.findall(r"\.(\w+)(\[\*\])?", path):
        key, star = part
        nodes = [n[key] for n in nodes if isinstance(n, dict) and key in n]
        if star:
            nodes = [x for n in nodes for x in n]
    return nodes


def test_readme_cleanup_selects_the_rendered_objects(ex):
    snippet = readme_cleanup()
    rs_sel = re.search(r"kubectl get replicasets -l (\S+)", snippet).group(1)
    cm_sel = re.search(r"kubectl get configmaps -l (\S+)", snippet).group(1)
    # A ReplicaSet carries its pod template's labels; a ConfigMap render.sh's.
    template_labels = ex.deploy["spec"]["template"]["metadata"]["labels"]
    assert dict(kv.split("=", 1) for kv in rs_sel.split(",")).items() <= template_labels.items()
    assert dict(kv.split("=", 1) for kv in cm_sel.split(",")).items() <= ex.cm["metadata"]["labels"].items()
    # Its JSONPath finds the ConfigMap a ReplicaSet of this Deployment names.
    path = re.search(r"jsonpath='\{(\.items\[\*\][^}]*)\}'", snippet).group(1)
    rs_list = {"items": [{"spec": ex.deploy["spec"]}]}
    assert jsonpath(rs_list, path) == [ex.cm["metadata"]["name"]], path


def test_readme_cleanup_jsonpath_with_kubectl(ex, tmp_path):
    """Where kubectl is installed, its own JSONPath on the Deployment made
    a ReplicaSet (kubectl label --local needs no API server)."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed")
    path = re.search(r"jsonpath='\{\.items\[\*\]([^}]*)\}'", readme_cleanup()).group(1)
    rs = dict(ex.deploy, kind="ReplicaSet")
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump(rs))
    res = subprocess.run([kubectl, "label", "--local", "-f", str(tmp_path / "rs.yaml"), "x=y",
                          "-o", "jsonpath={%s}" % path], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().split() == [ex.cm["metadata"]["name"]]


def test_readme_cleanup_deletes_only_what_no_replicaset_names(ex, tmp_path):
    """The README's clean-up, run by sh against a stub kubectl: it deletes
    the ConfigMaps no ReplicaSet names, and nothing when it cannot list the
    ReplicaSets."""
    stub = tmp_path / "kubectl"
    stub.write_text(STUB_KUBECTL)
    stub.chmod(0o755)
    log = tmp_path / "log"
    cur = ex.cm["metadata"]["name"]
    undo = CM_PREFIX + "0123456789abcdef"          # an older revision's, still named
    gone = CM_PREFIX + "fedcba9876543210"          # its ReplicaSet has gone
    prefix = cur[:-1]                             # a name the current one begins with

    def run(**env):
        log.write_text("")
        full = dict(os.environ, PATH="%s:%s" % (tmp_path, os.environ["PATH"]),
                    STUB_LOG=str(log), STUB_RS="%s %s" % (cur, undo),
                    STUB_CMS=" ".join("configmap/" + n for n in (cur, undo, gone, prefix)), **env)
        res = subprocess.run(["sh", "-c", readme_cleanup()], env=full, capture_output=True,
                             timeout=30)
        assert b"unexpected" not in res.stderr, res.stderr.decode()
        return res.returncode, [l.split()[1] for l in log.read_text().splitlines()
                                if l.startswith("delete ")]

    rc, deleted = run()
    assert rc == 0
    assert sorted(deleted) == sorted(["configmap/" + gone, "configmap/" + prefix]), deleted
    rc, deleted = run(STUB_RS_FAIL="1")
    assert rc != 0 and deleted == [], deleted


def dockerfile():
    return (K8S / "Dockerfile").read_text()


def test_security_context(ex):
    psc = ex.pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert ex.pod.get("automountServiceAccountToken") is False
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile(), flags=re.M)
    assert user, "the Dockerfile's USER is not numeric uid:gid (runAsNonRoot needs a number)"
    assert (psc["runAsUser"], psc["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))
    # The mounted keys are readable by that user through fsGroup, by nobody else.
    assert psc["fsGroup"] == psc["runAsGroup"]
    vol = ex.volumes[ex.fg["volumeMounts"][0]["name"]]
    assert vol["projected"]["defaultMode"] == 0o440
    for c in ex.containers.values():
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert not sc["capabilities"].get("add"), c["name"]


def test_image_runs_the_config_the_pod_mounts(ex):
    text = dockerfile()
    assert re.search(r"^FROM debian:12(-slim)?$", text, flags=re.M), "the runtime image is not Debian 12"
    assert '"/usr/sbin/feedguardd"' in re.search(r"^ENTRYPOINT (.*)$", text, flags=re.M).group(1)
    assert re.search(r'^CMD \["-c", "%s"\]$' % re.escape(CONFIG_PATH), text, flags=re.M)
    assert "--enable-test-hooks" not in re.sub(r"^#.*$", "", text, flags=re.M)
    assert "tzdata" in text, "the policy's time_zone needs zoneinfo in the image"


def test_resources_cover_the_memory_bound(ex):
    c = ex.config
    lim = c.get("limits", {})
    workers = c["workers"]
    assert isinstance(workers, int), "workers must be a number: the memory limit is sized for it"
    m_size = size(lim.get("max_message_size"), 4 * MIB)
    streams = lim.get("max_concurrent_streams", 1000)
    s_win = size(lim.get("stream_window"), MIB)
    w_buf = size(lim.get("worker_buffer"), 64 * MIB)
    pending = c.get("state", {}).get("max_pending", 1024)
    bound = (BASE + workers * (w_buf + FILTER_PER_WORKER + pending * REDIS_PER_PENDING + KEPT_PER_WORKER)
             + BUSY_CONNECTIONS * (m_size + streams * s_win))
    res = ex.fg["resources"]
    limit = quantity(res["limits"]["memory"])
    assert limit >= bound, "memory limit %d MiB under the bound %.0f MiB" % (limit // MIB, bound / MIB)
    assert quantity(res["requests"]["memory"]) <= limit
    assert cpus(res["limits"]["cpu"]) >= workers
    assert cpus(res["requests"]["cpu"]) <= cpus(res["limits"]["cpu"])


# ---------------------------------------------------------------- feedguardd -t

def lay_out_pod(ex, root):
    """The pod's /etc/feedguard under <root>: the ConfigMap's files (the
    mount root rewritten to <root>'s, the only change) and the Secret's,
    made here.  Returns the config's path."""
    mount = root / MOUNT_ROOT.strip("/")
    secret = {"ranking.pb": ph.ranking_pb().read_bytes()}
    for path, (kind, name, key) in ex.files.items():
        dst = mount / path[len(MOUNT_ROOT):]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if kind == "configMap":
            dst.write_text(ex.cm["data"][key].replace(MOUNT_ROOT, str(mount) + "/"))
        elif key in secret:
            dst.write_bytes(secret[key])
        elif key.endswith(".key"):
            dst.write_bytes(os.urandom(32))        # README: head -c 32 /dev/urandom
        else:
            dst.write_text("a-redis-password\n")
    return mount / CONFIG_PATH[len(MOUNT_ROOT):]


@pytest.mark.proxy_only
def test_feedguardd_t_passes_on_the_pod_layout(ex, tmp_path):
    cfg = lay_out_pod(ex, tmp_path)
    res = run_feedguardd(["-t", "-c", str(cfg)])
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 0, out
    assert "configuration ok" in out, out
    # And it does read what the Secret provides: without the key it fails.
    key = cfg.parent / ex.config["pseudonym_keys"][0]["file"][len(MOUNT_ROOT):]
    key.unlink()
    res = run_feedguardd(["-t", "-c", str(cfg)])
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 1 and str(key) in out, out
