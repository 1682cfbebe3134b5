{{/* The name of every object: the release's, or release-chart; short enough for "-metrics" after it. */}}
{{- define "wasmover.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Labels of every object. Never app.kubernetes.io/managed-by=wasmover: the
operator deletes objects with that label whose owner is gone (operator/src/gc.rs).
*/}}
{{- define "wasmover.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "wasmover.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* What the Service and the Deployment select the operator's Pods by. */}}
{{- define "wasmover.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "wasmover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "wasmover.fullname" .) -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The operator's image: REPOSITORY[:TAG]@DIGEST, the same image movers' agents
run; or, for a local try without a digest, REPOSITORY:TAG (no agent image).
*/}}
{{- define "wasmover.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- $image.repository }}{{ with $image.tag }}:{{ . }}{{ end }}@{{ $image.digest }}
{{- else if $image.tag -}}
{{- $image.repository }}:{{ $image.tag }}
{{- else -}}
{{- fail "image.digest is required: the operator hands its image to movers' agents, pinned by digest (--set image.digest=sha256:..., as `cargo xtask image` prints it). For a local try without agents, set image.tag instead." -}}
{{- end -}}
{{- end -}}
