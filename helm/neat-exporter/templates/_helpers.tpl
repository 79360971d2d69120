{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "neat-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name for the objects of this chart. */}}
{{- define "neat-exporter.fullname" -}}
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

{{- define "neat-exporter.bridgeName" -}}
{{- printf "%s-bridge" (include "neat-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "neat-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "neat-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: neat-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the per-node exporter pods. */}}
{{- define "neat-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "neat-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: exporter
{{- end }}

{{- define "neat-exporter.bridgeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "neat-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: bridge
{{- end }}

{{- define "neat-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "neat-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "neat-exporter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the global manager's credentials: an existing one, or the chart's. */}}
{{- define "neat-exporter.credentialsSecret" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if or .Values.credentials.username .Values.credentials.password }}
{{- printf "%s-credentials" (include "neat-exporter.fullname" .) }}
{{- end }}
{{- end }}

{{- define "neat-exporter.credentialsDir" -}}/etc/neat-exporter/credentials{{- end }}

{{/*
The global_manager section shared by the exporter and the bridge: values' config.global_manager
with the credential files pointing at the mounted Secret (never the secrets themselves).
*/}}
{{- define "neat-exporter.globalManager" -}}
{{- $gm := deepCopy (default dict .Values.config.global_manager) }}
{{- if include "neat-exporter.credentialsSecret" . }}
{{- $_ := set $gm "username_file" (printf "%s/username" (include "neat-exporter.credentialsDir" .)) }}
{{- $_ := set $gm "password_file" (printf "%s/password" (include "neat-exporter.credentialsDir" .)) }}
{{- end }}
{{- toYaml $gm }}
{{- end }}

{{/* Volume and mount of the credentials Secret, keyed to the file names the config uses. */}}
{{- define "neat-exporter.credentialsVolume" -}}
- name: credentials
  secret:
    secretName: {{ include "neat-exporter.credentialsSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.credentials.usernameKey }}
        path: username
      - key: {{ .Values.credentials.passwordKey }}
        path: password
{{- end }}
