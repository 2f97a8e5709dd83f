package inject

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// InjectYAML is `weft inject` (istioctl kube-inject): it reads YAML or
// JSON documents from in and writes them to out as YAML, with the pod
// templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
// CronJobs and Pods injected. Every workload is injected as if its
// namespace asked for this injector's revision; a pod's own opt-out
// (sidecar.istio.io/inject: "false", another istio.io/rev, hostNetwork)
// still holds. Other kinds, and documents that are not injected, are
// written unchanged. Skipped workloads are reported to skipped.
func InjectYAML(in io.Reader, out io.Writer, cfg Config, skipped func(what, why string)) error {
	// As if the namespace asked for this revision: a pod's own istio.io/rev
	// still wins.
	nsLabels := map[string]string{LabelRevision: firstOf(cfg.Revision, "default")}
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	first := true
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isComment(doc) {
			continue
		}
		res, err := injectDoc(doc, nsLabels, cfg, skipped)
		if err != nil {
			return fmt.Errorf("document %d: %w", n, err)
		}
		if !first {
			if _, err := io.WriteString(out, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if _, err := out.Write(res); err != nil {
			return err
		}
	}
}

func isComment(doc []byte) bool {
	for _, l := range bytes.Split(doc, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

func injectDoc(doc []byte, nsLabels map[string]string, cfg Config, skipped func(what, why string)) ([]byte, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	var obj any
	var meta *metav1.ObjectMeta
	var tmpl *corev1.PodTemplateSpec
	switch tm.Kind {
	case "Deployment":
		o := &appsv1.Deployment{}
		obj, meta, tmpl = o, &o.ObjectMeta, &o.Spec.Template
	case "StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, meta, tmpl = o, &o.ObjectMeta, &o.Spec.Template
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, meta, tmpl = o, &o.ObjectMeta, &o.Spec.Template
	case "ReplicaSet":
		o := &appsv1.ReplicaSet{}
		obj, meta, tmpl = o, &o.ObjectMeta, &o.Spec.Template
	case "Job":
		o := &batchv1.Job{}
		obj, meta, tmpl = o, &o.ObjectMeta, &o.Spec.Template
	case "CronJob":
		o := &batchv1.CronJob{}
		obj, meta, tmpl = o, &o.ObjectMeta, &o.Spec.JobTemplate.Spec.Template
	case "Pod":
		o := &corev1.Pod{}
		obj, meta = o, &o.ObjectMeta
	default:
		return ensureNewline(doc), nil
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	what := tm.Kind + "/" + meta.Name
	ns := meta.Namespace
	if ns == "" {
		ns = "default"
	}
	var why string
	var err error
	if pod, ok := obj.(*corev1.Pod); ok {
		var res *corev1.Pod
		res, why, err = InjectPod(pod, ns, nsLabels, cfg)
		if err == nil && why == "" {
			obj = res
		}
	} else {
		var res *corev1.PodTemplateSpec
		res, why, err = Inject(tmpl, ns, nsLabels, meta.Name, cfg)
		if err == nil && why == "" {
			*tmpl = *res
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if why != "" {
		if skipped != nil {
			skipped(what, why)
		}
		return ensureNewline(doc), nil
	}
	return yaml.Marshal(obj)
}

func ensureNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(b, '\n')
	}
	return b
}
