{{/* NetworkPolicy rules shared by the component policies. */}}

{{/* Egress to `to` (NetworkPolicyPeer list; empty: anywhere) on TCP `ports`. */}}
{{- define "enclave.egressRule" -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "enclave.dnsEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "enclave.redisEgress" -}}
{{- if .Values.redis.embedded.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "enclave.componentSelector" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else -}}
{{- include "enclave.egressRule" .Values.networkPolicy.redis -}}
{{- end -}}
{{- end -}}

{{/* OTLP only when an endpoint is configured. */}}
{{- define "enclave.otlpEgress" -}}
{{- if .Values.config.telemetry.otlpEndpoint -}}
{{- include "enclave.egressRule" .Values.networkPolicy.otlp -}}
{{- end -}}
{{- end -}}

{{/* The management port (9000), from Prometheus only. */}}
{{- define "enclave.prometheusIngress" -}}
- from:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.prometheus.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.prometheus.podSelector | nindent 8 }}
  ports:
    - port: 9000
      protocol: TCP
{{- end -}}
