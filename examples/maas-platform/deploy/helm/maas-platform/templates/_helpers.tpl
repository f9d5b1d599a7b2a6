{{- define "maas-platform.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "maas-platform.labels" -}}
app.kubernetes.io/name: maas-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "maas-platform.selector" -}}
app.kubernetes.io/name: maas-platform
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "maas-platform.secretName" -}}
{{- default (include "maas-platform.name" .) .Values.existingSecret -}}
{{- end -}}
