{{/* ---------- names and labels ---------- */}}

{{- define "lingshu-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lingshu-server.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lingshu-server.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lingshu-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lingshu-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lingshu-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Pods that serve HTTP: every pod of the Deployment, only the leaders of a LeaderWorkerSet. */}}
{{- define "lingshu-server.servingSelectorLabels" -}}
{{ include "lingshu-server.selectorLabels" . }}
{{- if .Values.multiNode.enabled }}
lingshu-server/role: leader
{{- end }}
{{- end }}

{{/* The Service clients call. In multi-node mode the LeaderWorkerSet controller needs the
     LWS's own name for the headless Service behind LWS_LEADER_ADDRESS (<lws>-<group>.<lws>.<ns>),
     and creates it only when no Service of that name exists: the client Service is <lws>-leader. */}}
{{- define "lingshu-server.serviceName" -}}
{{- if .Values.multiNode.enabled }}
{{- printf "%s-leader" (include "lingshu-server.fullname" .) }}
{{- else }}
{{- include "lingshu-server.fullname" . }}
{{- end }}
{{- end }}

{{- define "lingshu-server.workloadKind" -}}
{{- if .Values.multiNode.enabled }}LeaderWorkerSet
{{- else if .Values.model.perReplicaCache.enabled }}StatefulSet
{{- else }}Deployment
{{- end }}
{{- end }}

{{/* Replica bounds over whatever sets the count (replicaCount, the HPA, KEDA). */}}
{{- define "lingshu-server.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}
{{- else if .Values.keda.enabled }}{{ ternary 0 .Values.keda.minReplicaCount (not (kindIs "invalid" .Values.keda.idleReplicaCount)) }}
{{- else }}{{ .Values.replicaCount }}
{{- end }}
{{- end }}

{{- define "lingshu-server.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}
{{- else if .Values.keda.enabled }}{{ .Values.keda.maxReplicaCount }}
{{- else }}{{ .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* The `helm test` pod: not the app's name label, so no Service, PDB or workload selects it. */}}
{{- define "lingshu-server.helmTestLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
lingshu-server/role: helm-test
{{- end }}

{{- define "lingshu-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lingshu-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lingshu-server.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* ---------- derived settings ---------- */}}

{{- define "lingshu-server.modelDir" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.path }}
{{- end }}

{{- define "lingshu-server.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "lingshu-server.fullname" .)) .Values.apiKeys.existingSecret }}
{{- end }}

{{- define "lingshu-server.apiKeysDir" -}}/etc/lingshu/api-keys{{- end }}

{{/* Long enough for the preStop wait, the server's drain and a margin: the kubelet kills after it.
     The server's whole shutdown is one drain budget (the connections' wait after the drain takes
     what is left of it, at least 1 s), then the engine's exit: the margin covers those. */}}
{{- define "lingshu-server.terminationGracePeriodSeconds" -}}
{{- $drain := int (ceil (float64 .Values.settings.drainTimeout)) }}
{{- add .Values.shutdown.preStopSleepSeconds $drain .Values.shutdown.graceMarginSeconds }}
{{- end }}

{{/* Longest start the startup probe allows (loading the weights; in multi-node mode, the group
     forming too). */}}
{{- define "lingshu-server.startupBudgetSeconds" -}}
{{- mul .Values.probes.startup.periodSeconds .Values.probes.startup.failureThreshold }}
{{- end }}

{{- define "lingshu-server.progressDeadlineSeconds" -}}
{{- if .Values.progressDeadlineSeconds }}
{{- .Values.progressDeadlineSeconds }}
{{- else }}
{{- $download := ternary 3600 0 .Values.model.download.enabled }}
{{- add (include "lingshu-server.startupBudgetSeconds" .) 900 $download }}
{{- end }}
{{- end }}

{{/* Requests in flight per replica the autoscalers aim for: given, or three quarters of the
     admission limit (the server's default limit is 64), so replicas come before the queue. */}}
{{- define "lingshu-server.inFlightTarget" -}}
{{- $limit := int (default 64 .Values.settings.maxConcurrentRequests) }}
{{- $given := ternary .Values.autoscaling.inFlightTarget .Values.keda.inFlightThreshold .Values.autoscaling.enabled }}
{{- if not (kindIs "invalid" $given) }}
{{- toString $given }}
{{- else }}
{{- toString (max 1 (div (mul $limit 3) 4)) }}
{{- end }}
{{- end }}

{{/* A Kubernetes quantity in MiB, rounded up ("40Gi" -> 40960). */}}
{{- define "lingshu-server.mebibytes" -}}
{{- $quantity := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $quantity }}
{{- $unit := trimPrefix $number $quantity }}
{{- $perMi := dict "" (divf 1 1048576) "k" (divf 1000 1048576) "K" (divf 1000 1048576) "Ki" (divf 1 1024) "M" (divf 1000000 1048576) "Mi" 1.0 "G" (divf 1000000000 1048576) "Gi" 1024.0 "T" (divf 1000000000000 1048576) "Ti" 1048576.0 }}
{{- if or (not $number) (not (hasKey $perMi $unit)) }}
{{- fail (printf "cannot read the size %q: use a number with Mi, Gi or Ti" $quantity) }}
{{- end }}
{{- mulf (float64 $number) (get $perMi $unit) | ceil | int64 }}
{{- end }}

{{/* What the known checkpoints need on disk (bf16 safetensors plus the download's own files):
     Lingshu-7B ~17 GB, Lingshu-32B ~67 GB. Empty for other repositories. */}}
{{- define "lingshu-server.knownModelSize" -}}
{{- $repository := lower .Values.model.download.repository }}
{{- if regexMatch "(^|/)lingshu-7b$" $repository }}24Gi
{{- else if regexMatch "(^|/)lingshu-32b$" $repository }}80Gi
{{- end }}
{{- end }}

{{/* Size of the volume a download fills when it is not a shared claim (emptyDir or per-replica
     claim): the given size, else the known one; never smaller than the known one. */}}
{{- define "lingshu-server.downloadVolumeSize" -}}
{{- $given := ternary .Values.model.perReplicaCache.size .Values.model.download.emptyDirSizeLimit .Values.model.perReplicaCache.enabled }}
{{- $known := include "lingshu-server.knownModelSize" . }}
{{- $where := ternary "model.perReplicaCache.size" "model.download.emptyDirSizeLimit" .Values.model.perReplicaCache.enabled }}
{{- if and (kindIs "invalid" $given) (not $known) }}
{{- fail (printf "%s is required: the chart knows the size of Lingshu-7B and Lingshu-32B only, not %s" $where .Values.model.download.repository) }}
{{- end }}
{{- if and (not (kindIs "invalid" $given)) $known }}
{{- if lt (int64 (include "lingshu-server.mebibytes" $given)) (int64 (include "lingshu-server.mebibytes" $known)) }}
{{- fail (printf "%s %v is smaller than %s needs (%s): the download would fill the volume and the pod would be evicted" $where $given .Values.model.download.repository $known) }}
{{- end }}
{{- end }}
{{- if kindIs "invalid" $given }}{{ $known }}{{ else }}{{ $given }}{{ end }}
{{- end }}

{{- define "lingshu-server.modelInEmptyDir" -}}
{{- if and (not .Values.model.existingClaim) (not .Values.model.perReplicaCache.enabled) }}true{{ end }}
{{- end }}

{{/* The disk-backed emptyDirs (/tmp, HOME, an emptyDir of weights or state) as an ephemeral-storage
     request, so the scheduler picks a node with the disk they may fill. */}}
{{- define "lingshu-server.ephemeralStorageRequest" -}}
{{- $mi := add (include "lingshu-server.mebibytes" .Values.writableDirs.tmpSizeLimit) (include "lingshu-server.mebibytes" .Values.writableDirs.homeSizeLimit) }}
{{- if include "lingshu-server.modelInEmptyDir" . }}
{{- $mi = add $mi (include "lingshu-server.mebibytes" (include "lingshu-server.downloadVolumeSize" .)) }}
{{- end }}
{{- if and (include "lingshu-server.sqliteState" .) (not .Values.state.persistence.enabled) }}
{{- $mi = add $mi (include "lingshu-server.mebibytes" .Values.state.persistence.size) }}
{{- end }}
{{- printf "%dMi" (int64 $mi) }}
{{- end }}

{{/* A settings value as an environment string: lists and maps as JSON (pydantic-settings reads
     JSON), whole numbers without a float's exponent. */}}
{{- define "lingshu-server.envValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) }}
{{- toJson . }}
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The audit file per pod: replicas share no file (the server's lock guards one process). The
     kubelet expands $(POD_NAME) from the variable defined before it. */}}
{{- define "lingshu-server.auditLogFile" -}}
{{- $file := toString .Values.settings.auditLogFile }}
{{- printf "%s/$(POD_NAME)/%s" (dir $file) (base $file) }}
{{- end }}

{{- define "lingshu-server.validate" -}}
{{- $v := .Values }}
{{- $maxReplicas := int (include "lingshu-server.maxReplicas" .) }}
{{- $minReplicas := int (include "lingshu-server.minReplicas" .) }}
{{- if and $v.autoscaling.enabled $v.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled both scale the same workload: enable one" }}
{{- end }}
{{- if and (not $v.apiKeys.enabled) (not $v.settings.allowUnauthenticated) (not $v.settings.oidcIssuers) (eq $v.tls.clientAuth "none") }}
{{- fail "apiKeys.enabled is false: the server refuses to serve /v1 without keys unless settings.oidcIssuers (tokens) or tls.clientAuth (client certificates) stands in for them, or settings.allowUnauthenticated is true (only behind your own authenticating gateway)" }}
{{- end }}
{{- if and $v.apiKeys.enabled $v.apiKeys.existingSecret $v.apiKeys.keys }}
{{- fail "set apiKeys.existingSecret or apiKeys.keys, not both" }}
{{- end }}
{{- /* identity */}}
{{- if and $v.tls.enabled (not $v.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret (tls.crt, tls.key), e.g. from cert-manager" }}
{{- end }}
{{- if and (ne $v.tls.clientAuth "none") (not $v.tls.clientCaSecret) }}
{{- fail "tls.clientAuth needs tls.clientCaSecret: the CA client certificates must chain to" }}
{{- end }}
{{- if and (ne $v.tls.clientAuth "none") (not $v.tls.enabled) }}
{{- fail "tls.clientAuth needs tls.enabled" }}
{{- end }}
{{- if eq $v.tls.clientAuth "required" }}
{{- fail "tls.clientAuth required: the kubelet's probes present no client certificate and would fail; use optional (API calls still need a key, a token or a certificate)" }}
{{- end }}
{{- /* storage */}}
{{- if $v.model.perReplicaCache.enabled }}
{{- if $v.model.existingClaim }}
{{- fail "model.perReplicaCache gives each replica its own claim: leave model.existingClaim empty" }}
{{- end }}
{{- if not $v.model.download.enabled }}
{{- fail "model.perReplicaCache needs model.download.enabled: the download fills each replica's claim" }}
{{- end }}
{{- end }}
{{- if and (not $v.model.existingClaim) (not $v.model.download.enabled) }}
{{- fail "no model source: set model.existingClaim (a PVC holding the weights) or model.download.enabled" }}
{{- end }}
{{- if $v.model.existingClaim }}
{{- $mode := $v.model.existingClaimAccessMode }}
{{- $spread := or $v.multiNode.enabled (gt $maxReplicas 1) }}
{{- if and (has $mode (list "ReadWriteOnce" "ReadWriteOncePod")) $spread }}
{{- fail (printf "model.existingClaim %s is %s: it attaches to one node (one pod for ReadWriteOncePod), but up to %d replica(s)%s would mount it (Multi-Attach errors). Use a ReadOnlyMany or ReadWriteMany claim (and set model.existingClaimAccessMode), or model.perReplicaCache" $v.model.existingClaim $mode $maxReplicas (ternary " of a multi-node group" "" $v.multiNode.enabled)) }}
{{- end }}
{{- if and (eq $mode "ReadOnlyMany") $v.model.download.enabled }}
{{- fail (printf "model.download cannot write into the ReadOnlyMany claim %s: fill it once outside the chart (README), use a ReadWriteMany claim, or model.perReplicaCache" $v.model.existingClaim) }}
{{- end }}
{{- end }}
{{- if and $v.model.download.enabled (not $v.model.existingClaim) }}
{{- $_ := include "lingshu-server.downloadVolumeSize" . }}
{{- end }}
{{- /* multi-node */}}
{{- if $v.multiNode.enabled }}
{{- $lws := include "lingshu-server.fullname" . }}
{{- $lastGroup := toString (max 0 (sub $maxReplicas 1)) }}
{{- $workerSet := printf "%s-%s" $lws $lastGroup }}
{{- $workerPod := printf "%s-%d" $workerSet (int (sub $v.multiNode.nodes 1)) }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $lws) }}
{{- fail (printf "the LeaderWorkerSet name %q must be a DNS-1035 label (a lowercase letter first): it names the headless Service behind LWS_LEADER_ADDRESS" $lws) }}
{{- end }}
{{- if gt (len $workerSet) 52 }}
{{- fail (printf "the LeaderWorkerSet name %q is too long: its worker StatefulSet %q would pass 52 characters, and StatefulSet pods carry a controller-revision-hash label of the name plus 11 characters (at most 63). Shorten the release name or set fullnameOverride" $lws $workerSet) }}
{{- end }}
{{- if gt (len $workerPod) 63 }}
{{- fail (printf "the LeaderWorkerSet name %q is too long: pod %q would pass 63 characters (a DNS label, the pod's hostname)" $lws $workerPod) }}
{{- end }}
{{- if ge (int $v.multiNode.groupFormationTimeoutSeconds) (int (include "lingshu-server.startupBudgetSeconds" .)) }}
{{- fail (printf "multiNode.groupFormationTimeoutSeconds (%d) must stay under the startup probe budget (%s s = probes.startup.periodSeconds x failureThreshold), which also covers the weights' load" (int $v.multiNode.groupFormationTimeoutSeconds) (include "lingshu-server.startupBudgetSeconds" .)) }}
{{- end }}
{{- if and $v.multiNode.network.rdma.enabled (not $v.multiNode.network.rdma.resources) }}
{{- fail "multiNode.network.rdma.enabled needs multiNode.network.rdma.resources: the RDMA device plugin's resource, e.g. {rdma/ib: 1}" }}
{{- end }}
{{- end }}
{{- /* availability */}}
{{- $budget := toString $v.podDisruptionBudget.maxUnavailable }}
{{- if and $v.podDisruptionBudget.enabled (lt $minReplicas 2) (not (has $budget (list "0" "0%"))) }}
{{- fail (printf "podDisruptionBudget with %d replica(s) at minimum protects nothing: maxUnavailable %v lets a node drain take the only replica. Run at least 2 replicas, or set podDisruptionBudget.maxUnavailable: 0 to block voluntary evictions" $minReplicas $v.podDisruptionBudget.maxUnavailable) }}
{{- end }}
{{- $limit := int (default 64 $v.settings.maxConcurrentRequests) }}
{{- if or $v.autoscaling.enabled $v.keda.enabled }}
{{- if gt (float64 (include "lingshu-server.inFlightTarget" .)) (float64 $limit) }}
{{- fail (printf "the in-flight target %s per replica is above settings.maxConcurrentRequests (%d): requests would queue (and be refused) before the autoscaler adds a replica" (include "lingshu-server.inFlightTarget" .) $limit) }}
{{- end }}
{{- end }}
{{- if $v.keda.enabled }}
{{- if and (not (kindIs "invalid" $v.keda.idleReplicaCount)) (not $v.keda.extraTriggers) }}
{{- fail "keda.idleReplicaCount 0 needs keda.extraTriggers: with no replica running there is no queue to measure, so only a metric from outside the release (the ingress's request rate) can wake it" }}
{{- end }}
{{- with $v.keda.fallback }}
{{- if or (lt (int .replicas) (int $v.keda.minReplicaCount)) (gt (int .replicas) (int $v.keda.maxReplicaCount)) }}
{{- fail (printf "keda.fallback.replicas %v is outside minReplicaCount..maxReplicaCount" .replicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* routing and exposure */}}
{{- if and (eq $v.routing.sessionAffinity "header") (or (not $v.ingress.enabled) (not (contains "nginx" $v.ingress.className))) }}
{{- fail "routing.sessionAffinity header hashes at ingress-nginx (upstream-hash-by): enable the ingress with an nginx class, or choose clientIP or none" }}
{{- end }}
{{- if $v.ingress.enabled }}
{{- range $v.ingress.hosts }}
{{- range .paths }}
{{- $path := trimSuffix "/" .path }}
{{- if or (eq $path "/metrics") (and (ne .pathType "Exact") (hasPrefix (printf "%s/" $path) "/metrics/")) }}
{{- fail (printf "ingress path %q (%s) would route /metrics, which is unauthenticated: route the API (/v1) instead" .path .pathType) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* resources */}}
{{- $podClaims := list }}
{{- range $v.resourceClaims }}{{ $podClaims = append $podClaims .name }}{{ end }}
{{- range $v.resources.claims }}
{{- if not (has .name $podClaims) }}
{{- fail (printf "resources.claims names %q, which resourceClaims does not define" .name) }}
{{- end }}
{{- end }}
{{- /* stored state */}}
{{- if and (include "lingshu-server.sqliteState" .) (gt $maxReplicas 1) }}
{{- $knob := "replicaCount" }}
{{- if $v.autoscaling.enabled }}{{ $knob = "autoscaling.maxReplicas" }}{{ else if $v.keda.enabled }}{{ $knob = "keda.maxReplicaCount" }}{{ end }}
{{- fail (printf "stored state is in SQLite (state.databaseUrlSecret.name is empty), which only one server may open, but up to %d replicas would run (%s): give them a shared PostgreSQL with state.databaseUrlSecret (an existing Secret holding the database URL), or run one replica" $maxReplicas $knob) }}
{{- end }}
{{- end }}

{{/* ---------- pod building blocks ---------- */}}

{{/* Pod-level fields shared by every pod template (Deployment, StatefulSet, LWS leader and
     worker). `spreadLabels`: the labels topology spread constraints select by default. */}}
{{- define "lingshu-server.podSpecCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "lingshu-server.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
{{- /* No service-link variables: a Service named "lingshu" would inject LINGSHU_PORT=tcp://...
       and override the server's port setting. */}}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "lingshu-server.terminationGracePeriodSeconds" $root }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  {{- $constraint := deepCopy . }}
  {{- if not (hasKey $constraint "labelSelector") }}
  {{- $_ := set $constraint "labelSelector" (dict "matchLabels" $.spreadLabels) }}
  {{- end }}
  - {{- toYaml $constraint | nindent 4 }}
  {{- end }}
{{- end }}
{{- with $root.Values.resourceClaims }}
resourceClaims:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Resources of a GPU container: CPU/memory from values, one GPU per tensor-parallel rank
     (requests = limits), an ephemeral-storage request covering the disk-backed emptyDirs, RDMA
     devices in multi-node mode, and dynamic resource claims. Values given explicitly win. */}}
{{- define "lingshu-server.resources" -}}
{{- $extra := dict }}
{{- with .Values.gpuResourceName }}
{{- $_ := set $extra . (toString (int $.Values.parallelism.tensorParallelSize)) }}
{{- end }}
{{- if and .Values.multiNode.enabled .Values.multiNode.network.rdma.enabled }}
{{- range $name, $count := .Values.multiNode.network.rdma.resources }}
{{- $_ := set $extra $name (toString $count) }}
{{- end }}
{{- end }}
{{- $requests := merge (deepCopy (default dict .Values.resources.requests)) (dict "ephemeral-storage" (include "lingshu-server.ephemeralStorageRequest" .)) (deepCopy $extra) }}
{{- $limits := merge (deepCopy (default dict .Values.resources.limits)) (deepCopy $extra) -}}
requests:
  {{- toYaml $requests | nindent 2 }}
limits:
  {{- toYaml $limits | nindent 2 }}
{{- with .Values.resources.claims }}
claims:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The container security context: the values', plus IPC_LOCK (and only it) when NCCL uses
     RDMA in multi-node mode. */}}
{{- define "lingshu-server.securityContext" -}}
{{- $context := deepCopy .Values.securityContext }}
{{- if and .Values.multiNode.enabled .Values.multiNode.network.rdma.enabled }}
{{- $capabilities := default dict $context.capabilities }}
{{- $_ := set $capabilities "add" (list "IPC_LOCK") }}
{{- $_ := set $context "capabilities" $capabilities }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/* Volumes of every pod. The model: a shared claim (read-only at the volume level; a second,
     writable volume of the same claim only for the download init container), an emptyDir, or,
     with perReplicaCache, the claim from the workload's volumeClaimTemplates (not listed here). */}}
{{- define "lingshu-server.volumes" -}}
{{- if .Values.model.existingClaim }}
- name: model
  persistentVolumeClaim:
    claimName: {{ .Values.model.existingClaim }}
    readOnly: true
{{- if .Values.model.download.enabled }}
- name: model-download
  persistentVolumeClaim:
    claimName: {{ .Values.model.existingClaim }}
{{- end }}
{{- else if not .Values.model.perReplicaCache.enabled }}
- name: model
  emptyDir:
    sizeLimit: {{ include "lingshu-server.downloadVolumeSize" . }}
{{- end }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shm.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.writableDirs.tmpSizeLimit }}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.writableDirs.homeSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The per-replica model cache claim (StatefulSet or LeaderWorkerSet volumeClaimTemplates). */}}
{{- define "lingshu-server.modelCacheClaimTemplate" -}}
- metadata:
    name: model
    labels:
      {{- include "lingshu-server.selectorLabels" . | nindent 6 }}
  spec:
    accessModes:
      - ReadWriteOnce
    {{- with .Values.model.perReplicaCache.storageClassName }}
    storageClassName: {{ . }}
    {{- end }}
    resources:
      requests:
        storage: {{ include "lingshu-server.downloadVolumeSize" . }}
{{- end }}

{{/* Mounts of every vLLM process (server, Ray workers). */}}
{{- define "lingshu-server.volumeMounts" -}}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
- name: dshm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ .Values.writableDirs.homePath }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Startup and liveness on /health (503 while loading, or once the engine died); readiness on
     /ready (503 while loading and while draining after SIGTERM). */}}
{{- define "lingshu-server.probes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet:
    path: /health
    port: http
    {{- if .Values.tls.enabled }}
    scheme: HTTPS
    {{- end }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /health
    port: http
    {{- if .Values.tls.enabled }}
    scheme: HTTPS
    {{- end }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: http
    {{- if .Values.tls.enabled }}
    scheme: HTTPS
    {{- end }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/* Environment set per pod: the pod's IP for Ray and vLLM and the NCCL/Gloo settings in
     multi-node mode; the pod's name for its own audit file. */}}
{{- define "lingshu-server.podEnv" -}}
{{- if .Values.multiNode.enabled }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: VLLM_HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- range $name, $value := .Values.multiNode.network.env }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- if not .Values.multiNode.network.rdma.enabled }}
- name: NCCL_IB_DISABLE
  value: "1"
{{- end }}
{{- end }}
{{- if .Values.settings.auditLogFile }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: LINGSHU_AUDIT_LOG_FILE
  value: {{ include "lingshu-server.auditLogFile" . | quote }}
{{- end }}
{{- end }}

{{/* Opt-in init container: download the weights before the server starts. A marker written
     after a complete download names the repository and revision; a start that finds the same
     marker skips the Hub (so a restart never waits on it). `volume`: the writable model volume. */}}
{{- define "lingshu-server.downloadInitContainer" -}}
{{- $d := .Values.model.download -}}
{{- $dir := include "lingshu-server.modelDir" . -}}
{{- $wanted := printf "%s@%s" $d.repository $d.revision -}}
{{- $script := printf `set -eu
marker=%s
if [ -f "$marker" ] && [ "$(cat "$marker")" = %s ]; then
  echo "%s is complete in %s (marker found): not contacting the Hub"
  exit 0
fi
hf download %s --revision %s --local-dir %s
printf '%%s' %s > "$marker"` (printf "%s/.lingshu-download" $dir | squote) ($wanted | squote) $wanted $dir ($d.repository | squote) ($d.revision | squote) ($dir | squote) ($wanted | squote) -}}
- name: download-model
  image: {{ include "lingshu-server.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - sh
    - -c
    - |-
      {{- $script | nindent 6 }}
  env:
    - name: HF_HUB_DISABLE_TELEMETRY
      value: "1"
    {{- if $d.hfTokenSecret.name }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $d.hfTokenSecret.name }}
          key: {{ $d.hfTokenSecret.key }}
    {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $d.resources | nindent 4 }}
  volumeMounts:
    - name: {{ ternary "model-download" "model" (not (empty .Values.model.existingClaim)) }}
      mountPath: {{ .Values.model.mountPath }}
    - name: tmp
      mountPath: /tmp
    - name: home
      mountPath: {{ .Values.writableDirs.homePath }}
{{- end }}

{{/* The server container. `command` (a list) replaces the image's entrypoint, for the LWS leader. */}}
{{- define "lingshu-server.serverContainer" -}}
{{- $root := .root -}}
- name: lingshu-server
  image: {{ include "lingshu-server.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- with .command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: http
      containerPort: 8000
      protocol: TCP
    {{- if $root.Values.multiNode.enabled }}
    - name: ray-gcs
      containerPort: {{ $root.Values.multiNode.rayPort }}
      protocol: TCP
    {{- end }}
  envFrom:
    - configMapRef:
        name: {{ include "lingshu-server.fullname" $root }}
  {{- with include "lingshu-server.serverEnv" $root | trim }}
  env:
    {{- . | nindent 4 }}
  {{- end }}
  {{- include "lingshu-server.probes" $root | nindent 2 }}
  {{- if gt (int $root.Values.shutdown.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ $root.Values.shutdown.preStopSleepSeconds }}"]
  {{- end }}
  securityContext:
    {{- include "lingshu-server.securityContext" $root | nindent 4 }}
  resources:
    {{- include "lingshu-server.resources" $root | nindent 4 }}
  volumeMounts:
    {{- include "lingshu-server.volumeMounts" $root | nindent 4 }}
    {{- with include "lingshu-server.stateVolumeMount" $root | trim }}{{ . | nindent 4 }}{{ end }}
    {{- if $root.Values.apiKeys.enabled }}
    {{- include "lingshu-server.apiKeysVolumeMount" $root | nindent 4 }}
    {{- end }}
    {{- with include "lingshu-server.remoteVolumeMounts" $root | trim }}{{ . | nindent 4 }}{{ end }}
    {{- if $root.Values.tls.enabled }}
    {{- include "lingshu-server.tlsVolumeMounts" $root | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The serving pod of a Deployment or StatefulSet. */}}
{{- define "lingshu-server.singleNodePodTemplate" -}}
metadata:
  labels:
    {{- include "lingshu-server.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "lingshu-server.podSpecCommon" (dict "root" . "spreadLabels" (include "lingshu-server.selectorLabels" . | fromYaml)) | nindent 2 }}
  {{- if .Values.model.download.enabled }}
  initContainers:
    {{- include "lingshu-server.downloadInitContainer" . | nindent 4 }}
  {{- end }}
  containers:
    {{- include "lingshu-server.serverContainer" (dict "root" .) | nindent 4 }}
  volumes:
    {{- include "lingshu-server.volumes" . | trim | nindent 4 }}
    {{- with include "lingshu-server.stateVolume" . | trim }}{{ . | nindent 4 }}{{ end }}
    {{- if .Values.apiKeys.enabled }}
    {{- include "lingshu-server.apiKeysVolume" . | nindent 4 }}
    {{- end }}
    {{- with include "lingshu-server.remoteVolumes" . | trim }}{{ . | nindent 4 }}{{ end }}
    {{- if .Values.tls.enabled }}
    {{- include "lingshu-server.tlsVolumes" . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "lingshu-server.scaleTargetRef" -}}
{{- if .Values.multiNode.enabled -}}
apiVersion: leaderworkerset.x-k8s.io/v1
{{- else -}}
apiVersion: apps/v1
{{- end }}
kind: {{ include "lingshu-server.workloadKind" . }}
name: {{ include "lingshu-server.fullname" . }}
{{- end }}

{{/* ---------- API keys ---------- */}}

{{/* Only the server container sees the key file. A directory mount, not a subPath, so a rotated
     Secret reaches the running server (it re-reads the file when it changes). */}}
{{- define "lingshu-server.apiKeysVolume" -}}
- name: api-keys
  secret:
    secretName: {{ include "lingshu-server.apiKeysSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.apiKeys.existingSecretKey }}
        path: keys
{{- end }}

{{- define "lingshu-server.apiKeysVolumeMount" -}}
- name: api-keys
  mountPath: {{ include "lingshu-server.apiKeysDir" . }}
  readOnly: true
{{- end }}

{{/* The key file the chart's Secret holds: the keys from values; else the key generated at install
     (kept across upgrades through lookup); else a new random key. */}}
{{- define "lingshu-server.apiKeysFile" -}}
{{- if .Values.apiKeys.keys }}
{{- join "\n" .Values.apiKeys.keys }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "lingshu-server.apiKeysSecretName" .) }}
{{- $previous := dig "data" .Values.apiKeys.existingSecretKey "" $existing }}
{{- if $previous }}
{{- $previous | b64dec }}
{{- else }}
{{- printf "lsk-%s" (randAlphaNum 40) }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---------- stored state ---------- */}}

{{/* SQLite in the state volume, unless a database URL Secret is given (PostgreSQL). */}}
{{- define "lingshu-server.sqliteState" -}}
{{- if not .Values.state.databaseUrlSecret.name }}true{{ end }}
{{- end }}

{{/* SQLite on a claim: the claim attaches to one node, the file is held by one server at a time,
     so pods are replaced, never surged. */}}
{{- define "lingshu-server.stateOnClaim" -}}
{{- if and (include "lingshu-server.sqliteState" .) .Values.state.persistence.enabled }}true{{ end }}
{{- end }}

{{- define "lingshu-server.stateClaimName" -}}
{{- default (printf "%s-state" (include "lingshu-server.fullname" .)) .Values.state.persistence.existingClaim }}
{{- end }}

{{/* The state volume of the serving pod (SQLite only). */}}
{{- define "lingshu-server.stateVolume" -}}
{{- if include "lingshu-server.sqliteState" . }}
- name: state
  {{- if .Values.state.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "lingshu-server.stateClaimName" . }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ .Values.state.persistence.size }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "lingshu-server.stateVolumeMount" -}}
{{- if include "lingshu-server.sqliteState" . }}
- name: state
  mountPath: {{ .Values.state.mountPath }}
{{- end }}
{{- end }}

{{/* The server container's environment: the pod's, plus the database URL from its Secret (a
     secret: never in the ConfigMap, and only where the server runs). */}}
{{- define "lingshu-server.serverEnv" -}}
{{- include "lingshu-server.podEnv" . }}
{{- with .Values.state.databaseUrlSecret.name }}
- name: LINGSHU_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.state.databaseUrlSecret.key }}
{{- end }}
{{- end }}

{{/* ---------- Remote systems with credentials: PACS (DICOMweb) and FHIR servers ---------- */}}

{{/* Each kind's entries (`url`, `auth`, `existingSecret`, `existingSecretKey`), the name of its
     settings (LINGSHU_<KIND>_URLS, _AUTH) and of its credential folders. */}}
{{- define "lingshu-server.remoteSystems" -}}
{{- toJson (list (dict "kind" "dicomweb" "entries" .Values.dicomweb.pacs) (dict "kind" "fhir" "entries" .Values.fhir.servers)) }}
{{- end }}

{{- define "lingshu-server.remoteDir" -}}/etc/lingshu/{{ . }}{{- end }}

{{- define "lingshu-server.remoteUrls" -}}
{{- $urls := list }}
{{- range .entries }}
{{- $urls = append $urls .url }}
{{- end }}
{{- toJson $urls }}
{{- end }}

{{/* One entry per system: none, forward, or basic:/bearer: with the mounted credentials file. */}}
{{- define "lingshu-server.remoteAuth" -}}
{{- $dir := include "lingshu-server.remoteDir" .kind }}
{{- $auth := list }}
{{- range $i, $entry := .entries }}
{{- if has $entry.auth (list "basic" "bearer") }}
{{- $auth = append $auth (printf "%s:%s/%d/%s" $entry.auth $dir $i (default "credentials" $entry.existingSecretKey)) }}
{{- else }}
{{- $auth = append $auth $entry.auth }}
{{- end }}
{{- end }}
{{- toJson $auth }}
{{- end }}

{{/* A directory mount per credential (not a subPath), so a rotated Secret reaches the running
     server, which re-reads the file when it changes. Only the server container. */}}
{{- define "lingshu-server.remoteVolumes" -}}
{{- range (include "lingshu-server.remoteSystems" . | fromJsonArray) }}
{{- $kind := .kind }}
{{- range $i, $entry := .entries }}
{{- if has $entry.auth (list "basic" "bearer") }}
- name: {{ $kind }}-{{ $i }}
  secret:
    secretName: {{ $entry.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ default "credentials" $entry.existingSecretKey }}
        path: {{ default "credentials" $entry.existingSecretKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lingshu-server.remoteVolumeMounts" -}}
{{- range (include "lingshu-server.remoteSystems" . | fromJsonArray) }}
{{- $kind := .kind }}
{{- range $i, $entry := .entries }}
{{- if has $entry.auth (list "basic" "bearer") }}
- name: {{ $kind }}-{{ $i }}
  mountPath: {{ include "lingshu-server.remoteDir" $kind }}/{{ $i }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---------- Identity: HTTPS and client certificates served by the server itself ---------- */}}

{{- define "lingshu-server.tlsDir" -}}/etc/lingshu/tls{{- end }}
{{- define "lingshu-server.tlsClientCaDir" -}}/etc/lingshu/tls-client-ca{{- end }}

{{/* Directory mounts, not subPaths: a renewed Secret (cert-manager) reaches the running server,
     which serves the new files to new connections without a restart. */}}
{{- define "lingshu-server.tlsVolumes" -}}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
{{- with .Values.tls.clientCaSecret }}
- name: tls-client-ca
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.tls.clientCaKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{- define "lingshu-server.tlsVolumeMounts" -}}
- name: tls
  mountPath: {{ include "lingshu-server.tlsDir" . }}
  readOnly: true
{{- if .Values.tls.clientCaSecret }}
- name: tls-client-ca
  mountPath: {{ include "lingshu-server.tlsClientCaDir" . }}
  readOnly: true
{{- end }}
{{- end }}
