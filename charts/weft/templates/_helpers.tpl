{{/* The name of every object: fullnameOverride, else "weft". */}}
{{- define "weft.fullname" -}}
{{- default "weft" .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weft.labels" -}}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: weft
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "weft.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* Whether the pod mounts the CA Secret as --ca-dir. */}}
{{- define "weft.caFromSecret" -}}
{{- if ne .Values.ca.source "memory" }}true{{ end -}}
{{- end -}}

{{/* The mesh config file: meshConfig as YAML. */}}
{{- define "weft.meshConfig" -}}
{{ toYaml .Values.meshConfig }}
{{- end -}}
