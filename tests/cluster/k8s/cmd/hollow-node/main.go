/*
Copyright 2023 The Kubernetes Authors.
Modifications for the StaticPod operator's test cluster.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// hollow-node runs kubemark's hollow kubelet (the real kubelet code with a fake
// container runtime) with the settings an edge-node test needs and stock kubemark
// cannot set: a fixed static-pod directory, loopback-only serving, a short node
// lease so a stopped node is noticed quickly, and images that fail to pull on
// demand so a broken rollout can be simulated.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	probetest "k8s.io/kubernetes/pkg/kubelet/prober/testing"
	"k8s.io/kubernetes/pkg/kubemark"
)

// runningIsReady replaces kubemark's probe manager, which reports every container
// Ready even while it waits for an image that never arrives. Here a container is
// Ready exactly when it is running, as it is on a real node without probes.
type runningIsReady struct{ probetest.FakeManager }

func (runningIsReady) UpdatePodStatus(_ context.Context, _ *v1.Pod, status *v1.PodStatus) {
	for i := range status.ContainerStatuses {
		cs := &status.ContainerStatuses[i]
		cs.Ready = cs.State.Running != nil
	}
}

// failingImages makes pulls of the listed images fail, as an unreachable or
// missing image does on a real node: the pod stays Pending with ErrImagePull
// and never becomes Ready.
type failingImages struct {
	internalapi.ImageManagerService
	refs map[string]bool
}

func (f *failingImages) fails(image *runtimeapi.ImageSpec) bool {
	return image != nil && f.refs[image.Image]
}

func (f *failingImages) ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	if f.fails(image) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return f.ImageManagerService.ImageStatus(ctx, image, verbose)
}

func (f *failingImages) PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandbox *runtimeapi.PodSandboxConfig) (string, error) {
	if f.fails(image) {
		return "", fmt.Errorf("pull of %q refused: this hollow node was started with --fail-image=%s", image.Image, image.Image)
	}
	return f.ImageManagerService.PullImage(ctx, image, auth, sandbox)
}

func main() {
	var (
		name          = flag.String("name", "", "node name (required)")
		kubeconfig    = flag.String("kubeconfig", "", "kubeconfig of the kubelet's API identity (required)")
		rootDir       = flag.String("root-dir", "", "kubelet root directory; also holds the fake runtime socket (required)")
		staticPodPath = flag.String("static-pod-path", "", "directory the kubelet reads static pod manifests from (required)")
		port          = flag.Int("kubelet-port", 0, "port of the kubelet API on 127.0.0.1 (required)")
		leaseSeconds  = flag.Int("lease-seconds", 8, "node lease duration; the kubelet renews it every quarter of this")
		statusEvery   = flag.Duration("status-update-frequency", 4*time.Second, "how often the kubelet computes node status")
		labels        = flag.String("node-labels", "", "extra node labels, k=v,k2=v2")
		failImages    = flag.String("fail-image", "", "comma-separated image references whose pulls fail")
		showVersion   = flag.Bool("version", false, "print the Kubernetes version and exit")
	)
	klog.InitFlags(nil)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Get().GitVersion)
		return
	}
	if *name == "" || *kubeconfig == "" || *rootDir == "" || *staticPodPath == "" || *port == 0 {
		fmt.Fprintln(os.Stderr, "hollow-node: --name, --kubeconfig, --root-dir, --static-pod-path and --kubelet-port are required")
		os.Exit(2)
	}
	if err := run(*name, *kubeconfig, *rootDir, *staticPodPath, *port, *leaseSeconds, *statusEvery, *labels, *failImages); err != nil {
		klog.Fatalf("hollow-node %s: %v", *name, err)
	}
}

func run(name, kubeconfig, rootDir, staticPodPath string, port, leaseSeconds int, statusEvery time.Duration, labels, failImages string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	klog.Infof("hollow-node %s, Kubernetes %s", name, version.Get().GitVersion)

	for _, dir := range []string{rootDir, staticPodPath} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	clientConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	clientConfig.UserAgent = "hollow-kubelet/" + name
	clientConfig.QPS, clientConfig.Burst = 50, 100
	client, err := clientset.NewForConfig(clientConfig)
	if err != nil {
		return err
	}

	nodeLabels := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			nodeLabels[k] = v
		}
	}
	f, c := kubemark.GetHollowKubeletConfig(&kubemark.HollowKubeletOptions{
		NodeName:            name,
		KubeletPort:         port,
		KubeletReadOnlyPort: 0,
		MaxPods:             110,
		NodeLabels:          nodeLabels,
	})
	// GetHollowKubeletConfig made random directories under /tmp; use ours instead
	// so a restarted node keeps its static pods, like a rebooted edge node.
	generated := f.RootDirectory
	f.RootDirectory = rootDir
	c.PodLogsDir = filepath.Join(rootDir, "pod-logs")
	c.StaticPodPath = staticPodPath
	if err := os.RemoveAll(generated); err != nil {
		klog.Warningf("remove %s: %v", generated, err)
	}
	c.Address = "127.0.0.1"
	c.FileCheckFrequency.Duration = 2 * time.Second
	c.SyncFrequency.Duration = 2 * time.Second
	c.NodeLeaseDurationSeconds = int32(leaseSeconds)
	c.NodeStatusUpdateFrequency.Duration = statusEvery

	heartbeatConfig := *clientConfig
	heartbeatConfig.Timeout = statusEvery
	heartbeatConfig.QPS = -1
	heartbeatClient, err := clientset.NewForConfig(&heartbeatConfig)
	if err != nil {
		return err
	}

	endpoint := "unix://" + filepath.Join(rootDir, "cri.sock")
	_ = os.Remove(filepath.Join(rootDir, "cri.sock"))
	fakeRuntime := fakeremote.NewFakeRemoteRuntime()
	if err := fakeRuntime.Start(endpoint); err != nil {
		return fmt.Errorf("start fake runtime on %s: %w", endpoint, err)
	}
	defer fakeRuntime.Stop()
	runtimeService, err := remote.NewRemoteRuntimeServiceBuilder().
		WithEndpoint(endpoint).
		WithConnectionTimeout(15 * time.Second).
		Build(ctx)
	if err != nil {
		return fmt.Errorf("connect runtime service: %w", err)
	}
	images := &failingImages{ImageManagerService: fakeRuntime.ImageService, refs: map[string]bool{}}
	for _, ref := range strings.Split(failImages, ",") {
		if ref = strings.TrimSpace(ref); ref != "" {
			images.refs[ref] = true
		}
	}

	kubelet := kubemark.NewHollowKubelet(f, c, client, heartbeatClient,
		&cadvisortest.Fake{NodeName: name}, images, runtimeService, cm.NewStubContainerManager())
	kubelet.KubeletDeps.ProbeManager = runningIsReady{}
	go kubelet.Run(ctx)
	<-ctx.Done()
	klog.Infof("hollow-node %s: stopping", name)
	return nil
}
