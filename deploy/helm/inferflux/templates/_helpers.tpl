{{/* The chart's name, or nameOverride. */}}
{{- define "inferflux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, or release-chart (the release alone if it
already holds the chart's name); 63 characters at most, a DNS label. */}}
{{- define "inferflux.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "inferflux.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels every object carries. */}}
{{- define "inferflux.labels" -}}
helm.sh/chart: {{ include "inferflux.chart" . }}
{{ include "inferflux.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The labels that select the pods (the Deployment's selector and the Service's). */}}
{{- define "inferflux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferflux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inferflux.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "inferflux.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the pods read: the user's existingSecret or the chart's own. */}}
{{- define "inferflux.secretName" -}}
{{- default (include "inferflux.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "inferflux.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* True when the policy store is the encrypted file, so the pods need its passphrase. */}}
{{- define "inferflux.encryptedPolicy" -}}
{{- if eq (default "memory" (dig "policy" "store" "" .Values.config)) "encrypted_file" -}}true{{- end -}}
{{- end -}}

{{/* True when an init container imports the Secret's policy into the policy file. */}}
{{- define "inferflux.importsPolicy" -}}
{{- if and .Values.secrets.importPolicy (include "inferflux.encryptedPolicy" .) (or .Values.secrets.existingSecret .Values.secrets.policy) -}}true{{- end -}}
{{- end -}}

{{/* The configuration file: .Values.config with server.host and server.port set by the
chart, so the probes and the Service reach the port the server listens on. */}}
{{- define "inferflux.config" -}}
{{- $config := deepCopy (default dict .Values.config) -}}
{{- $server := deepCopy (default dict (get $config "server")) -}}
{{- $_ := set $server "host" "0.0.0.0" -}}
{{- $_ = set $server "port" (int .Values.containerPort) -}}
{{- $_ = set $config "server" $server -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The directory of the encrypted policy file (policy.options.path). */}}
{{- define "inferflux.policyDir" -}}
{{- dir (dig "policy" "options" "path" "/var/lib/inferflux/policy.bin" .Values.config) -}}
{{- end -}}

{{/* The environment of the server and of the policy-import init container. */}}
{{- define "inferflux.env" -}}
{{- if include "inferflux.encryptedPolicy" . }}
- name: INFERFLUX_POLICY_PASSPHRASE
  valueFrom:
    secretKeyRef:
      name: {{ include "inferflux.secretName" . }}
      key: {{ .Values.secrets.passphraseKey }}
{{- end }}
{{- range $name, $_ := .Values.secrets.extraEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "inferflux.secretName" $ }}
      key: {{ $name }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}
