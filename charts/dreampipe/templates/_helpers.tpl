{{- define "dreampipe.labels" -}}
app.kubernetes.io/name: dreampipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: dreampipe
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "dreampipe.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ .Release.Name }}-nats.{{ .Release.Namespace }}.svc:4222
{{- else -}}
{{ .Values.externalNats.url }}
{{- end -}}
{{- end -}}

{{/* Stream replicas of Entities that name none: the value, else 3 on a chart-run cluster. */}}
{{- define "dreampipe.streamReplicas" -}}
{{- if .Values.entityDefaults.streamReplicas -}}
{{ .Values.entityDefaults.streamReplicas }}
{{- else if and .Values.nats.enabled (ge (int .Values.nats.replicas) 3) -}}
3
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* Restricted pod security (Pod Security Standards "restricted"). */}}
{{- define "dreampipe.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dreampipe.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
An image reference from {repository, tag, digest}: the tag defaults to the second argument (the
chart's appVersion for DreamPipe's images); a digest pins it. Call with (list .Values.x.image default).
*/}}
{{- define "dreampipe.image" -}}
{{- $image := index . 0 -}}
{{- $ref := printf "%s:%s" $image.repository (default (index . 1) $image.tag) -}}
{{- if $image.digest -}}
{{ $ref }}@{{ $image.digest }}
{{- else -}}
{{ $ref }}
{{- end -}}
{{- end -}}

{{/*
Where a component's pods run and what they pull with: imagePullSecrets (the chart-wide ones,
then the component's), nodeSelector, tolerations, affinity. Call with (list $ .Values.component).
*/}}
{{- define "dreampipe.placement" -}}
{{- $root := index . 0 -}}
{{- $values := index . 1 -}}
{{- $secrets := concat ($root.Values.imagePullSecrets | default list) ($values.imagePullSecrets | default list) -}}
{{- with $secrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The namespaces the query service serves besides its own: a comma-separated list, or `*`. */}}
{{- define "dreampipe.queryNamespaces" -}}
{{- $listed := .Values.query.namespaces | default .Values.operator.watchNamespaces -}}
{{- if $listed }}{{ join "," $listed }}{{ else }}*{{ end -}}
{{- end }}

{{/* The namespaces given a query token of their own, comma-separated. */}}
{{- define "dreampipe.queryTokenNamespaces" -}}
{{- $listed := .Values.query.auth.tokenNamespaces | default .Values.query.namespaces | default .Values.operator.watchNamespaces -}}
{{- join "," ($listed | default (list .Release.Namespace)) -}}
{{- end }}

{{/* The Secret of namespace-scoped query tokens. */}}
{{- define "dreampipe.queryTokensSecret" -}}
{{- .Values.query.auth.existingSecret | default (printf "%s-query-tokens" .Release.Name) -}}
{{- end }}
