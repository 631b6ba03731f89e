// Checks deploy/kubernetes as a cluster's admission would, before any cluster
// sees it (./scripts/test runs it: node tests/deploy/manifests/check.mjs):
//   - every object of the kustomization (and the Secret template) validates
//     against the Kubernetes schema of its kind (kubernetes-models, API 1.27);
//   - every pod template passes the restricted Pod Security Standard: no host
//     namespaces, ports or paths, no privilege or escalation, all capabilities
//     dropped, a non-root user, RuntimeDefault seccomp, allowed volume types;
//   - beyond the standard: a read-only root file system, writable paths only
//     on volumes, the image pinned to gradnorm's version;
//   - a StatefulSet's serviceName names a headless Service of the same files
//     that selects its pods;
//   - a Deployment of several pods has a PodDisruptionBudget over them that
//     lets a drain evict one.
// Prints one line per finding and "manifests: N objects valid" or
// "manifests: FAILED (N findings)"; exits non-zero on a finding.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { Secret, Service } from "kubernetes-models/v1";
import { StatefulSet, Deployment } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../..");
// Each a kustomization, with its Secret templates beside it (not among its
// resources, so that applying it never overwrites real Secrets).
const kustomizations = [
  { dir: "deploy/kubernetes", secrets: ["secret.yaml"] },
  { dir: "deploy/kubernetes/postgres", secrets: ["postgres-secret.yaml"] },
];
const models = {
  "v1/Secret": Secret,
  "v1/Service": Service,
  "apps/v1/StatefulSet": StatefulSet,
  "apps/v1/Deployment": Deployment,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
};
const version = /GRADNORM_VERSION = "([^"]+)"/.exec(
  readFileSync(join(root, "version.bzl"), "utf8"))[1];

const findings = [];
const finding = (where, what) => findings.push(`${where}: ${what}`);

function load(dir, file) {
  const path = `${dir}/${file}`;
  const docs = parseAllDocuments(readFileSync(join(root, path), "utf8"));
  return docs.map((doc, i) => {
    if (doc.errors.length) finding(`${path}#${i}`, doc.errors[0].message);
    return { file: path, object: doc.toJS() };
  }).filter(({ object }) => object != null);
}

const objects = kustomizations.flatMap(({ dir, secrets }) => {
  const kustomization = load(dir, "kustomization.yaml")[0].object;
  return [...kustomization.resources, ...secrets].flatMap((f) => load(dir, f));
});

// The schema of each object's kind.
for (const { file, object } of objects) {
  const where = `${file} ${object.kind}/${object.metadata?.name}`;
  const Model = models[`${object.apiVersion}/${object.kind}`];
  if (!Model) {
    finding(where, `no schema known for ${object.apiVersion} ${object.kind}`);
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    const details = (error.errors ?? [])
      .map((e) => `${e.instancePath} ${e.message}`).join("; ");
    finding(where, `schema: ${details || error.message}`);
  }
}

// The restricted Pod Security Standard (and our additions) on a pod spec.
const allowedVolumes = new Set(["configMap", "csi", "downwardAPI", "emptyDir",
  "ephemeral", "persistentVolumeClaim", "projected", "secret"]);
const safeSysctls = new Set(["kernel.shm_rmid_forced",
  "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range"]);
function checkPod(where, spec, claimTemplates) {
  const pod = spec.securityContext ?? {};
  for (const host of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (spec[host]) finding(where, `${host} is set`);
  }
  for (const s of pod.sysctls ?? []) {
    if (!safeSysctls.has(s.name)) finding(where, `unsafe sysctl ${s.name}`);
  }
  const mounted = new Set(claimTemplates);
  for (const v of spec.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== "name");
    if (!allowedVolumes.has(type)) finding(where, `volume ${v.name} is ${type}`);
    mounted.add(v.name);
  }
  const containers = [...(spec.initContainers ?? []), ...spec.containers];
  for (const c of containers) {
    const at = `${where} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if (sc.privileged) finding(at, "privileged");
    if (sc.allowPrivilegeEscalation !== false) {
      finding(at, "allowPrivilegeEscalation is not false");
    }
    const caps = sc.capabilities ?? {};
    if (!(caps.drop ?? []).includes("ALL")) finding(at, "capabilities do not drop ALL");
    for (const added of caps.add ?? []) {
      if (added !== "NET_BIND_SERVICE") finding(at, `adds capability ${added}`);
    }
    const nonRoot = sc.runAsNonRoot ?? pod.runAsNonRoot;
    if (nonRoot !== true) finding(at, "runAsNonRoot is not true");
    if ((sc.runAsUser ?? pod.runAsUser) === 0) finding(at, "runs as user 0");
    const seccomp = (sc.seccompProfile ?? pod.seccompProfile)?.type;
    if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") {
      finding(at, `seccompProfile is ${seccomp ?? "unset"}, expected RuntimeDefault`);
    }
    if (sc.procMount && sc.procMount !== "Default") finding(at, "procMount is not Default");
    for (const p of c.ports ?? []) {
      if (p.hostPort) finding(at, `hostPort ${p.hostPort}`);
    }
    if (sc.readOnlyRootFilesystem !== true) {
      finding(at, "readOnlyRootFilesystem is not true");
    }
    for (const m of c.volumeMounts ?? []) {
      if (!mounted.has(m.name)) finding(at, `mounts unknown volume ${m.name}`);
    }
    const paths = (c.volumeMounts ?? []).map((m) => m.mountPath);
    if (!paths.includes("/tmp")) finding(at, "no volume at /tmp (the root is read-only)");
    const image = c.image ?? "";
    if (image !== `gradnorm-coordinator:${version}` &&
        !image.endsWith(`/gradnorm-coordinator:${version}`)) {
      finding(at, `image ${image}, expected gradnorm-coordinator:${version}`);
    }
  }
}

const services = objects.filter(({ object }) => object.kind === "Service");
for (const { file, object } of objects) {
  const where = `${file} ${object.kind}/${object.metadata?.name}`;
  if (object.kind !== "StatefulSet" && object.kind !== "Deployment") continue;
  const template = object.spec?.template ?? {};
  checkPod(where, template.spec ?? { containers: [] },
           (object.spec?.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
  for (const c of template.spec?.containers ?? []) {
    if (!c.readinessProbe || !c.livenessProbe) {
      finding(`${where} container ${c.name}`, "lacks a readiness or liveness probe");
    }
  }
  if (object.kind === "StatefulSet") {
    const headless = services.find(({ object: s }) =>
      s.metadata.name === object.spec.serviceName);
    if (!headless) {
      finding(where, `serviceName ${object.spec.serviceName} names no Service here`);
    } else {
      const s = headless.object;
      if (s.spec.clusterIP !== "None") {
        finding(where, `Service ${s.metadata.name} is not headless (clusterIP: None)`);
      }
      const labels = template.metadata?.labels ?? {};
      for (const [k, v] of Object.entries(s.spec.selector ?? {})) {
        if (labels[k] !== v) finding(where, `Service ${s.metadata.name} selects ${k}=${v}, not its pods`);
      }
    }
  }
}

// A Deployment of several pods has a PodDisruptionBudget over them that
// leaves a drain room to evict one.
const budgets = objects.filter(({ object }) => object.kind === "PodDisruptionBudget");
for (const { file, object } of objects) {
  if (object.kind !== "Deployment" || (object.spec?.replicas ?? 1) < 2) continue;
  const where = `${file} ${object.kind}/${object.metadata?.name}`;
  const labels = object.spec.template?.metadata?.labels ?? {};
  const budget = budgets.find(({ object: b }) =>
    Object.entries(b.spec?.selector?.matchLabels ?? { none: "" })
      .every(([k, v]) => labels[k] === v));
  if (!budget) {
    finding(where, "no PodDisruptionBudget selects its pods");
    continue;
  }
  const spec = budget.object.spec;
  const allows = spec.maxUnavailable !== undefined
    ? spec.maxUnavailable >= 1
    : spec.minAvailable !== undefined && spec.minAvailable < object.spec.replicas;
  if (!allows) {
    finding(where, `PodDisruptionBudget ${budget.object.metadata.name} lets no pod be evicted`);
  }
}

for (const f of findings) console.log(`manifests: ${f}`);
if (findings.length) {
  console.log(`manifests: FAILED (${findings.length} findings)`);
  process.exit(1);
}
console.log(`manifests: ${objects.length} objects valid`);
