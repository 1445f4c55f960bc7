{{/* Common labels. */}}
{{- define "azml-operator.labels" -}}
app.kubernetes.io/name: azml-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels (immutable in a Deployment: never add the version here). */}}
{{- define "azml-operator.selectorLabels" -}}
app.kubernetes.io/name: azml-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
