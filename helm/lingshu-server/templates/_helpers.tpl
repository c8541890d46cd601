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

{{/* Long enough for the preStop wait, the server's drain and a margin: the kubelet kills after it. */}}
{{- define "lingshu-server.terminationGracePeriodSeconds" -}}
{{- $drain := int (ceil (float64 .Values.settings.drainTimeout)) }}
{{- add .Values.shutdown.preStopSleepSeconds $drain .Values.shutdown.graceMarginSeconds }}
{{- end }}

{{/* A settings value as an environment string: lists as JSON (pydantic-settings reads JSON lists),
     whole numbers without a float's exponent. */}}
{{- define "lingshu-server.envValue" -}}
{{- if kindIs "slice" . }}
{{- toJson . }}
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Fail early, at render time, on combinations that cannot work. */}}
{{- define "lingshu-server.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled both scale the same workload: enable one" }}
{{- end }}
{{- if and (not .Values.model.existingClaim) (not .Values.model.download.enabled) }}
{{- fail "no model source: set model.existingClaim (a PVC holding the weights) or model.download.enabled" }}
{{- end }}
{{- if and (not .Values.apiKeys.enabled) (not .Values.settings.allowUnauthenticated) }}
{{- fail "apiKeys.enabled is false: the server refuses to serve /v1 without keys unless settings.allowUnauthenticated is true (only behind your own authenticating gateway)" }}
{{- end }}
{{- if and .Values.apiKeys.enabled .Values.apiKeys.existingSecret .Values.apiKeys.keys }}
{{- fail "set apiKeys.existingSecret or apiKeys.keys, not both" }}
{{- end }}
{{- end }}

{{/* ---------- pod building blocks ---------- */}}

{{/* Pod-level fields shared by the Deployment and both LeaderWorkerSet templates. */}}
{{- define "lingshu-server.podSpecCommon" -}}
serviceAccountName: {{ include "lingshu-server.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- /* No service-link variables: a Service named "lingshu" would inject LINGSHU_PORT=tcp://...
       and override the server's port setting. */}}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "lingshu-server.terminationGracePeriodSeconds" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* CPU/memory from values plus one GPU per tensor-parallel rank (requests = limits for GPUs). */}}
{{- define "lingshu-server.resources" -}}
{{- $gpus := dict .Values.gpuResourceName (toString (int .Values.parallelism.tensorParallelSize)) }}
{{- $requests := merge (deepCopy $gpus) (deepCopy (default dict .Values.resources.requests)) }}
{{- $limits := merge (deepCopy $gpus) (deepCopy (default dict .Values.resources.limits)) -}}
requests:
  {{- toYaml $requests | nindent 2 }}
limits:
  {{- toYaml $limits | nindent 2 }}
{{- end }}

{{- define "lingshu-server.volumes" -}}
- name: model
  {{- if .Values.model.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ .Values.model.download.emptyDirSizeLimit }}
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
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: http
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{- define "lingshu-server.podIPEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: VLLM_HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}

{{/* Opt-in init container: download the weights before the server starts. */}}
{{- define "lingshu-server.downloadInitContainer" -}}
{{- $d := .Values.model.download -}}
- name: download-model
  image: {{ include "lingshu-server.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - hf
    - download
    - {{ $d.repository | quote }}
    - --revision
    - {{ $d.revision | quote }}
    - --local-dir
    - {{ include "lingshu-server.modelDir" . | quote }}
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
    - name: model
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
  {{- if $root.Values.multiNode.enabled }}
  env:
    {{- include "lingshu-server.podIPEnv" $root | nindent 4 }}
  {{- end }}
  {{- include "lingshu-server.probes" $root | nindent 2 }}
  {{- if gt (int $root.Values.shutdown.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ $root.Values.shutdown.preStopSleepSeconds }}"]
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  resources:
    {{- include "lingshu-server.resources" $root | nindent 4 }}
  volumeMounts:
    {{- include "lingshu-server.volumeMounts" $root | nindent 4 }}
    {{- if $root.Values.apiKeys.enabled }}
    {{- include "lingshu-server.apiKeysVolumeMount" $root | nindent 4 }}
    {{- end }}
    {{- if $root.Values.dicomweb.pacs }}
    {{- include "lingshu-server.dicomwebVolumeMounts" $root | trim | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "lingshu-server.scaleTargetRef" -}}
{{- if .Values.multiNode.enabled -}}
apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
{{- else -}}
apiVersion: apps/v1
kind: Deployment
{{- end }}
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

{{/* ---------- DICOMweb (PACS) ---------- */}}

{{- define "lingshu-server.dicomwebDir" -}}/etc/lingshu/dicomweb{{- end }}

{{- define "lingshu-server.dicomwebUrls" -}}
{{- $urls := list }}
{{- range .Values.dicomweb.pacs }}
{{- $urls = append $urls .url }}
{{- end }}
{{- toJson $urls }}
{{- end }}

{{/* One entry per PACS: none, forward, or basic:/bearer: with the mounted credentials file. */}}
{{- define "lingshu-server.dicomwebAuth" -}}
{{- $root := . }}
{{- $auth := list }}
{{- range $i, $pacs := .Values.dicomweb.pacs }}
{{- if has $pacs.auth (list "basic" "bearer") }}
{{- $file := printf "%s/%d/%s" (include "lingshu-server.dicomwebDir" $root) $i (default "credentials" $pacs.existingSecretKey) }}
{{- $auth = append $auth (printf "%s:%s" $pacs.auth $file) }}
{{- else }}
{{- $auth = append $auth $pacs.auth }}
{{- end }}
{{- end }}
{{- toJson $auth }}
{{- end }}

{{/* A directory mount per PACS credential (not a subPath), so a rotated Secret reaches the
     running server, which re-reads the file when it changes. Only the server container. */}}
{{- define "lingshu-server.dicomwebVolumes" -}}
{{- range $i, $pacs := .Values.dicomweb.pacs }}
{{- if has $pacs.auth (list "basic" "bearer") }}
- name: dicomweb-{{ $i }}
  secret:
    secretName: {{ $pacs.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ default "credentials" $pacs.existingSecretKey }}
        path: {{ default "credentials" $pacs.existingSecretKey }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lingshu-server.dicomwebVolumeMounts" -}}
{{- $root := . }}
{{- range $i, $pacs := .Values.dicomweb.pacs }}
{{- if has $pacs.auth (list "basic" "bearer") }}
- name: dicomweb-{{ $i }}
  mountPath: {{ include "lingshu-server.dicomwebDir" $root }}/{{ $i }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
