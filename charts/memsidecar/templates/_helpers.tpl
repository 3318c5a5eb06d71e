{{/* Names */}}
{{- define "memsidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memsidecar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "memsidecar.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "memsidecar.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "memsidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "memsidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "memsidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memsidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "memsidecar.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "memsidecar.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "memsidecar.webhookService" -}}
{{- printf "%s-webhook" (include "memsidecar.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memsidecar.tlsSecret" -}}
{{- if eq .Values.webhook.certificate.source "provided" -}}
{{- required "webhook.certificate.secretName is required with source=provided" .Values.webhook.certificate.secretName -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "memsidecar.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* image reference: repository[:tag][@digest] */}}
{{- define "memsidecar.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The webhook's CA and serving certificate when Helm makes them: reused from the
existing Secret when there is one (helm install/upgrade can look it up), else new.
Computed once per render and cached in .Values so the Secret and caBundle agree.
*/}}
{{- define "memsidecar.helmCertificate" -}}
{{- if not (hasKey .Values "_helmCertificate") -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "memsidecar.tlsSecret" .) -}}
{{- $cert := dict -}}
{{- if and $secret (hasKey (default dict $secret.data) "ca.crt") (hasKey $secret.data "tls.crt") (hasKey $secret.data "tls.key") -}}
{{- $_ := set $cert "ca" (index $secret.data "ca.crt") -}}
{{- $_ := set $cert "crt" (index $secret.data "tls.crt") -}}
{{- $_ := set $cert "key" (index $secret.data "tls.key") -}}
{{- else -}}
{{- $svc := include "memsidecar.webhookService" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $ca := genCA (printf "memsidecar webhook CA for %s.%s" $svc $ns) (int .Values.webhook.certificate.validityDays) -}}
{{- $leaf := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $names (int .Values.webhook.certificate.validityDays) $ca -}}
{{- $_ := set $cert "ca" ($ca.Cert | b64enc) -}}
{{- $_ := set $cert "crt" ($leaf.Cert | b64enc) -}}
{{- $_ := set $cert "key" ($leaf.Key | b64enc) -}}
{{- end -}}
{{- $_ := set .Values "_helmCertificate" $cert -}}
{{- end -}}
{{- end -}}

{{/* caBundle for the webhook configurations (empty with cert-manager: its injector fills it). */}}
{{- define "memsidecar.caBundle" -}}
{{- if eq .Values.webhook.certificate.source "helm" -}}
{{- include "memsidecar.helmCertificate" . -}}
{{- index .Values._helmCertificate "ca" -}}
{{- else if eq .Values.webhook.certificate.source "provided" -}}
{{- required "webhook.certificate.caBundle is required with source=provided" .Values.webhook.certificate.caBundle -}}
{{- end -}}
{{- end -}}

{{- define "memsidecar.webhookAnnotations" -}}
{{- if eq .Values.webhook.certificate.source "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s-webhook" .Release.Namespace (include "memsidecar.fullname" .) }}
{{- end }}
{{- end -}}

{{- define "memsidecar.clientConfig" -}}
clientConfig:
  service:
    name: {{ include "memsidecar.webhookService" .root }}
    namespace: {{ .root.Release.Namespace }}
    port: 443
    path: {{ .path }}
  {{- $ca := include "memsidecar.caBundle" .root }}
  {{- if $ca }}
  caBundle: {{ $ca }}
  {{- end }}
{{- end -}}
