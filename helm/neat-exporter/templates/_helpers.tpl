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

{{- define "neat-exporter.globalManagerName" -}}
{{- printf "%s-global-manager" (include "neat-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "neat-exporter.globalManagerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "neat-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: global-manager
{{- end }}

{{- define "neat-exporter.globalManagerSecretDir" -}}/etc/neat-exporter/secrets{{- end }}

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

{{/* The Secret holding the web config: an existing one, or the chart's. */}}
{{- define "neat-exporter.webConfigSecret" -}}
{{- .Values.webConfig.existingSecret | default (printf "%s-web-config" (include "neat-exporter.fullname" .)) }}
{{- end }}

{{- define "neat-exporter.webConfigDir" -}}/etc/neat-exporter/web{{- end }}

{{/*
Refuse web config values that cannot work, naming the value to change. Only a chart-made web
config can be compared with webConfig.tls and webConfig.clientAuth.
*/}}
{{- define "neat-exporter.webConfigChecks" -}}
{{- $web := .Values.webConfig }}
{{- if $web.enabled }}
{{- if and $web.existingSecret (or $web.config $web.files) }}
{{- fail "webConfig: give either existingSecret or config/files, not both" }}
{{- end }}
{{- if not (or $web.existingSecret $web.config) }}
{{- fail "webConfig.enabled needs webConfig.existingSecret or webConfig.config" }}
{{- end }}
{{- with $web.config }}
{{- $tls := default dict .tls_server_config }}
{{- if ne (not (empty $tls)) $web.tls }}
{{- fail (printf "webConfig.tls is %t but webConfig.config %s tls_server_config" $web.tls (ternary "has" "has no" (not (empty $tls)))) }}
{{- end }}
{{- $askedFor := or .basic_auth_users (has (default "NoClientCert" $tls.client_auth_type) (list "RequireAnyClientCert" "RequireClientCert" "RequireAndVerifyClientCert")) }}
{{- if and $askedFor (not $web.clientAuth) }}
{{- fail "webConfig.clientAuth must be true: webConfig.config asks clients for a password or certificate, which HTTP probes cannot give" }}
{{- end }}
{{- if and .basic_auth_users $web.bridge $.Values.bridge.enabled (or $.Values.bridge.bearerToken $.Values.bridge.existingSecret) }}
{{- fail "webConfig.bridge: the bridge's bearer token and webConfig.config.basic_auth_users both need the Authorization header; set webConfig.bridge=false or drop one" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether a component (exporter, bridge, global-manager) is served with the web config: "true" or "". */}}
{{- define "neat-exporter.webConfigFor" -}}
{{- $web := .root.Values.webConfig }}
{{- $wanted := dict "exporter" true "bridge" $web.bridge "global-manager" $web.globalManager }}
{{- if and $web.enabled (get $wanted .component) }}true{{ end }}
{{- end }}

{{/*
Volume and mount of the web config Secret, with the certificate Secret (cert-manager's, say) in
the same folder: the whole folder, never a subPath, so that renewals reach the pod.
*/}}
{{- define "neat-exporter.webConfigVolume" -}}
- name: web-config
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "neat-exporter.webConfigSecret" . }}
      {{- with .Values.webConfig.certificateSecret }}
      - secret:
          name: {{ . }}
      {{- end }}
{{- end }}

{{- define "neat-exporter.webConfigMount" -}}
- name: web-config
  mountPath: {{ include "neat-exporter.webConfigDir" . }}
  readOnly: true
{{- end }}

{{/*
A probe for a component: the given one, over HTTPS with TLS, and a TCP connection when the web
config wants client credentials (kept out of the pod spec, so the kubelet has none).
*/}}
{{- define "neat-exporter.probe" -}}
{{- $probe := deepCopy .probe }}
{{- $web := .root.Values.webConfig }}
{{- if and (include "neat-exporter.webConfigFor" .) $probe.httpGet }}
{{- if $web.clientAuth }}
{{- $_ := set $probe "tcpSocket" (dict "port" $probe.httpGet.port) }}
{{- $_ := unset $probe "httpGet" }}
{{- else if $web.tls }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/* scheme, tlsConfig and basicAuth of a ServiceMonitor or PodMonitor endpoint. */}}
{{- define "neat-exporter.scrapeSecurity" -}}
{{- $web := .root.Values.webConfig }}
{{- if include "neat-exporter.webConfigFor" . }}
scheme: {{ ternary "https" "http" $web.tls }}
{{- with $web.scrape.tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $web.scrape.basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
