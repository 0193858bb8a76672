{{/* Names and labels. */}}
{{- define "enclave.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "enclave.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "enclave.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enclave.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "enclave.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "enclave.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "enclave.componentSelector" -}}
{{ include "enclave.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "enclave.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "enclave.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: (dict "registry" r "image" img "root" $); the tag defaults to appVersion. */}}
{{- define "enclave.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- $ref := printf "%s:%s" .image.repository $tag -}}
{{- if .registry -}}{{- $ref = printf "%s/%s" (trimSuffix "/" .registry) $ref -}}{{- end -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" $ref .image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Security contexts every pod and container gets. */}}
{{- define "enclave.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "enclave.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "enclave.imagePullSecrets" -}}
imagePullSecrets:
{{- if .Values.image.pullSecrets }}
{{- range .Values.image.pullSecrets }}
  - name: {{ . | quote }}
{{- end }}
{{- else }} []
{{- end }}
{{- end -}}

{{/* One env var from a Secret key: (dict "name" ENV "ref" {existingSecret, key} "what" text). */}}
{{- define "enclave.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "%s: set its existingSecret" .what) .ref.existingSecret | quote }}
      key: {{ required (printf "%s: set its key" .what) .ref.key | quote }}
{{- end -}}

{{/* Database URLs (main, and the optional audit and sequencer ones). */}}
{{- define "enclave.databaseEnv" -}}
{{ include "enclave.secretEnv" (dict "name" "ENCLAVE_DATABASE__URL" "ref" .Values.database.url "what" "database.url") }}
{{- if .Values.database.auditUrl.existingSecret }}
{{ include "enclave.secretEnv" (dict "name" "ENCLAVE_AUDIT__DATABASE_URL" "ref" .Values.database.auditUrl "what" "database.auditUrl") }}
{{- end }}
{{- if .Values.database.sequencerUrl.existingSecret }}
{{ include "enclave.secretEnv" (dict "name" "ENCLAVE_AUDIT__SEQUENCER_DATABASE_URL" "ref" .Values.database.sequencerUrl "what" "database.sequencerUrl") }}
{{- end }}
{{- end -}}

{{/* The Redis URL: the embedded server's Secret, or the external one's. */}}
{{- define "enclave.redisEnv" -}}
{{- if .Values.redis.embedded.enabled -}}
{{ include "enclave.secretEnv" (dict "name" "ENCLAVE_REDIS__URL" "ref" (dict "existingSecret" .Values.redis.embedded.auth.existingSecret "key" .Values.redis.embedded.auth.urlKey) "what" "redis.embedded.auth") }}
{{- else -}}
{{ include "enclave.secretEnv" (dict "name" "ENCLAVE_REDIS__URL" "ref" .Values.redis.url "what" "redis.url") }}
{{- end -}}
{{- end -}}

{{- define "enclave.redisHost" -}}
{{- printf "%s-redis" (include "enclave.fullname" .) -}}
{{- end -}}

{{/* HOME and caches on the writable /tmp, as the root filesystem is read-only. */}}
{{- define "enclave.runtimeEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/cache
{{- end -}}

{{/* Writable scratch: /tmp and the state directory. */}}
{{- define "enclave.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: state
  emptyDir: {}
{{- end -}}

{{- define "enclave.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: {{ .Values.config.stateDir }}
{{- end -}}

{{/* The claim models are read from. */}}
{{- define "enclave.modelClaim" -}}
{{- default (printf "%s-models" (include "enclave.fullname" .)) .Values.modelStorage.existingClaim -}}
{{- end -}}

{{- define "enclave.gatewayGracePeriod" -}}
{{- $g := .Values.gateway -}}
{{- $floor := add $g.preStopSleepS $g.drainTimeoutS -}}
{{- if $g.terminationGracePeriodSeconds -}}
{{- if le (int $g.terminationGracePeriodSeconds) (int $floor) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed preStopSleepS + drainTimeoutS (%v)" $g.terminationGracePeriodSeconds $floor) -}}
{{- end -}}
{{- $g.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $floor 15 -}}
{{- end -}}
{{- end -}}
