#!/usr/bin/env bash
# The whole textrec platform on a local kind cluster, end to end:
#   kind cluster -> images built and loaded -> Kubeflow Pipelines (standalone, pinned) -> MLflow
#   -> the pipeline run (train, evaluate, register) -> archive the champion -> TorchServe -> helm test.
#
#   deploy/kind/local-kind.sh            (or: make local-kind)
#
# Environment: CLUSTER (kind cluster name, default textrec), KFP_VERSION (Kubeflow Pipelines release,
# default 2.14.3), NAMESPACE (default kubeflow: the pipeline's default mlflow_uri, http://mlflow:5000,
# then resolves), RELEASE (Helm release, default textrec), IMAGE_TAG (default: git describe),
# MODEL_URI (where the served archive is published), KIND_NODE_IMAGE (kindest/node image, optional),
# SKIP_PIPELINE=1 (stop after installing the platform).
set -euo pipefail

# --- tools first: say everything that is missing, at once, before touching anything ---
missing=()
for tool in docker kind kubectl helm make git; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "local-kind: missing tools: ${missing[*]}" >&2
  echo "  docker: https://docs.docker.com/engine/install/ (or the docker.io package)" >&2
  echo "  kind:   https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
  echo "  kubectl, helm: https://kubernetes.io/docs/tasks/tools/ and https://helm.sh/docs/intro/install/" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "local-kind: docker is installed but no Docker engine answers (start dockerd, or set DOCKER_HOST)" >&2
  exit 1
fi

root=$(cd "${BASH_SOURCE[0]%/*}/../.." && pwd)
cd "$root"
CLUSTER=${CLUSTER:-textrec}
KFP_VERSION=${KFP_VERSION:-2.14.3}
NAMESPACE=${NAMESPACE:-kubeflow}
RELEASE=${RELEASE:-textrec}
IMAGE_TAG=${IMAGE_TAG:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
MODEL_NAME=textrec-line  # textrec.tracking.MODEL_NAME, which the pipeline registers (a test checks)
MODEL_URI=${MODEL_URI:-s3://mlpipeline/textrec/models/$MODEL_NAME.mar}
S3_ENDPOINT=http://minio-service.kubeflow:9000  # the object store Kubeflow Pipelines installs
KFP_PORT=${KFP_PORT:-8888}
component="textrec-component:$IMAGE_TAG"
serving="textrec-serving:$IMAGE_TAG"
step() { printf '\n==> %s\n' "$*"; }

step "kind cluster '$CLUSTER'"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "images $component, $serving"
IMAGE_REGISTRY="" IMAGE_TAG="$IMAGE_TAG" docker/build-images.sh
kind load docker-image --name "$CLUSTER" "$component" "$serving"

step "Kubeflow Pipelines $KFP_VERSION (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl -n kubeflow wait --for=condition=Available --timeout=20m deployment --all

step "S3 credentials (Secret textrec-s3, from the pipeline object store's)"
access=$(kubectl -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d)
secret=$(kubectl -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d)
kubectl -n "$NAMESPACE" create secret generic textrec-s3 --dry-run=client -o yaml \
  --from-literal=AWS_ACCESS_KEY_ID="$access" --from-literal=AWS_SECRET_ACCESS_KEY="$secret" | kubectl apply -f -

values=(
  --set-string "mlflow.image.tag=$IMAGE_TAG" --set-string "serving.image.tag=$IMAGE_TAG"
  --set mlflow.fullnameOverride=mlflow
  --set mlflow.mlflow.artifactsDestination=s3://mlpipeline/textrec/mlflow
  --set "mlflow.s3.endpoint=$S3_ENDPOINT" --set mlflow.s3.existingSecret=textrec-s3
  --set-string "serving.model.name=$MODEL_NAME" --set "serving.model.uri=$MODEL_URI"
  --set "serving.model.s3.endpoint=$S3_ENDPOINT" --set serving.model.s3.existingSecret=textrec-s3
)
step "platform chart (MLflow first; serving once a model exists)"
helm dependency update charts/textrec-platform >/dev/null
helm upgrade --install "$RELEASE" charts/textrec-platform -n "$NAMESPACE" "${values[@]}" \
  --set serving.enabled=false --wait --timeout 10m

if [ "${SKIP_PIPELINE:-0}" != 1 ]; then
  step "pipeline run (train, evaluate, register)"
  kubectl -n kubeflow port-forward svc/ml-pipeline "$KFP_PORT:8888" >/dev/null 2>&1 &
  pf=$!
  trap 'kill $pf 2>/dev/null || true' EXIT
  sleep 3
  TEXTREC_IMAGE="$component" make pipeline-run KFP_HOST="http://127.0.0.1:$KFP_PORT"

  step "archive the registry's champion to $MODEL_URI"
  kubectl -n "$NAMESPACE" delete job textrec-archive --ignore-not-found >/dev/null
  kubectl -n "$NAMESPACE" apply -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: textrec-archive}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: archive
          image: $component
          command: [sh, -ec]
          args:
            - |
              python -m serving.archive models:/$MODEL_NAME@champion --store /tmp/store
              python -c "import glob; from textrec.storage import upload; print(upload(glob.glob('/tmp/store/*.mar')[0], '$MODEL_URI'))"
          env:
            - {name: MLFLOW_TRACKING_URI, value: "http://mlflow:5000"}
            - {name: AWS_ENDPOINT_URL_S3, value: "$S3_ENDPOINT"}
            - name: AWS_ACCESS_KEY_ID
              valueFrom: {secretKeyRef: {name: textrec-s3, key: AWS_ACCESS_KEY_ID}}
            - name: AWS_SECRET_ACCESS_KEY
              valueFrom: {secretKeyRef: {name: textrec-s3, key: AWS_SECRET_ACCESS_KEY}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
YAML
  kubectl -n "$NAMESPACE" wait --for=condition=complete --timeout=10m job/textrec-archive

  step "serving"
  helm upgrade --install "$RELEASE" charts/textrec-platform -n "$NAMESPACE" "${values[@]}" \
    --set serving.enabled=true --wait --timeout 10m
  helm test "$RELEASE" -n "$NAMESPACE" --logs
fi

step "endpoints"
cat <<TXT
Kubeflow Pipelines UI: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80   -> http://localhost:8080
MLflow:                kubectl -n $NAMESPACE port-forward svc/mlflow 5000:5000          -> http://localhost:5000
Recognizer:            kubectl -n $NAMESPACE port-forward svc/textrec-serving 8090:8080
  TOKEN=\$(kubectl -n $NAMESPACE get secret textrec-serving-token -o jsonpath='{.data.token}' | base64 -d)
  curl -H "Authorization: Bearer \$TOKEN" -H "Content-Type: image/png" --data-binary @line.png \\
    http://localhost:8090/predictions/$MODEL_NAME
Delete everything:     kind delete cluster --name $CLUSTER
TXT
