package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"k8s.io/apimachinery/pkg/api/resource"
)

// CNIConfig says where CNI configs and plugins are.
type CNIConfig struct {
	ConfDir  string   // the first .conflist, .conf or .json in name order is used
	BinDirs  []string // plugin binaries
	CacheDir string   // libcni's record of each attachment, for DEL after a restart
	Logger   *slog.Logger
	// PodCIDR, comma-separated ("10.88.0.0/16,fd00:88::/64"), is passed
	// as the ipRanges capability, one range set per CIDR; "" passes none.
	PodCIDR string
}

// CNI sets pods up with the operator's CNI plugins through libcni, passing
// the capabilities kubelet's runtimes pass: portMappings (host ports),
// bandwidth (pod annotations) and ipRanges (the pod CIDR). libcni gives each
// plugin only the capabilities its config declares.
type CNI struct {
	cni      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	file     string
	ipRanges [][]ipRange
	cacheDir string
	log      *slog.Logger
}

// ipRange is one element of the ipRanges capability (host-local's range).
type ipRange struct {
	Subnet string `json:"subnet"`
}

// parseIPRanges turns "10.88.0.0/16,fd00:88::/64" into one range set per
// CIDR, as dual-stack host-local expects.
func parseIPRanges(podCIDR string) ([][]ipRange, error) {
	var out [][]ipRange
	for _, s := range strings.Split(podCIDR, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("pod_cidr %q: %q is not a CIDR such as 10.88.0.0/16", podCIDR, s)
		}
		out = append(out, []ipRange{{Subnet: n.String()}})
	}
	return out, nil
}

// Pod annotations kubelet reads for traffic shaping, in bits per second.
const (
	annotationIngressBandwidth = "kubernetes.io/ingress-bandwidth"
	annotationEgressBandwidth  = "kubernetes.io/egress-bandwidth"
)

// bandwidth is the bandwidth capability (the bandwidth plugin's runtimeConfig).
type bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// podBandwidth reads the bandwidth annotations as kubelet validates them
// (a quantity from 1k to 1P) and as containerd passes them (burst
// unlimited). nil means no shaping.
func podBandwidth(annotations map[string]string) (*bandwidth, error) {
	minRate, maxRate := resource.MustParse("1k"), resource.MustParse("1P")
	parse := func(key string) (uint64, error) {
		v, ok := annotations[key]
		if !ok {
			return 0, nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return 0, fmt.Errorf("annotation %s=%q: not a quantity such as 10M: %w", key, v, err)
		}
		if q.Cmp(minRate) < 0 || q.Cmp(maxRate) > 0 {
			return 0, fmt.Errorf("annotation %s=%q: must be from 1k to 1P (bits per second)", key, v)
		}
		return uint64(q.Value()), nil
	}
	in, err := parse(annotationIngressBandwidth)
	if err != nil {
		return nil, err
	}
	out, err := parse(annotationEgressBandwidth)
	if err != nil {
		return nil, err
	}
	if in == 0 && out == 0 {
		return nil, nil
	}
	bw := &bandwidth{IngressRate: in, EgressRate: out}
	if in > 0 {
		bw.IngressBurst = math.MaxUint32
	}
	if out > 0 {
		bw.EgressBurst = math.MaxUint32
	}
	return bw, nil
}

// cniIfName is the pod's interface, as kubelet and every CNI plugin expect.
const cniIfName = "eth0"

// FindCNIConfig returns the config file peapod would use from dir, or "" if
// there is none.
func FindCNIConfig(dir string) (string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return "", fmt.Errorf("read CNI config dir %s: %w", dir, err)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return "", nil
	}
	return files[0], nil
}

// NewCNI loads the first config of cfg.ConfDir and checks that its plugins
// exist, so that a missing plugin is named at start, not at the first pod.
func NewCNI(ctx context.Context, cfg CNIConfig) (*CNI, error) {
	file, err := FindCNIConfig(cfg.ConfDir)
	if err != nil {
		return nil, err
	}
	if file == "" {
		return nil, fmt.Errorf("no CNI config (.conflist, .conf) in %s", cfg.ConfDir)
	}
	var list *libcni.NetworkConfigList
	if filepath.Ext(file) == ".conflist" {
		list, err = libcni.ConfListFromFile(file)
	} else {
		var conf *libcni.NetworkConfig
		if conf, err = libcni.ConfFromFile(file); err == nil {
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("CNI config %s: %w", file, err)
	}
	ranges, err := parseIPRanges(cfg.PodCIDR)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &CNI{cni: libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, nil), list: list, file: file, ipRanges: ranges,
		cacheDir: cfg.CacheDir, log: cfg.Logger}
	return c, nil
}

// Ready checks that every plugin of the config is installed and speaks the
// config's CNI version.
func (c *CNI) Ready() error {
	if _, err := c.cni.ValidateNetworkList(context.Background(), c.list); err != nil {
		return fmt.Errorf("CNI network %q (%s): %w", c.list.Name, c.file, err)
	}
	return nil
}

func (c *CNI) runtimeConf(pod Pod) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{
		ContainerID: pod.ID,
		NetNS:       pod.NetNS,
		IfName:      cniIfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", pod.ID},
			{"K8S_POD_UID", pod.UID},
		},
	}
	type portMapping struct {
		HostPort      int32  `json:"hostPort"`
		ContainerPort int32  `json:"containerPort"`
		Protocol      string `json:"protocol"`
		HostIP        string `json:"hostIP,omitempty"`
	}
	var pms []portMapping
	for _, p := range pod.Ports {
		if p.HostPort > 0 {
			pms = append(pms, portMapping{p.HostPort, p.ContainerPort, p.Protocol, p.HostIP})
		}
	}
	caps := map[string]interface{}{}
	if len(pms) > 0 {
		caps["portMappings"] = pms
	}
	bw, err := podBandwidth(pod.Annotations)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", pod.ID, err)
	}
	if bw != nil {
		caps["bandwidth"] = bw
	}
	if len(c.ipRanges) > 0 {
		caps["ipRanges"] = c.ipRanges
	}
	if len(caps) > 0 {
		rt.CapabilityArgs = caps
	}
	return rt, nil
}

// SetupPod brings the pod's loopback up, then runs ADD. A failed ADD is
// followed by DEL, as the CNI spec asks, so nothing is left for a pod that
// never came up.
func (c *CNI) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	rt, err := c.runtimeConf(pod)
	if err != nil {
		return Result{}, err
	}
	// Conflists (Debian's, podman's, most CNI providers') have no loopback
	// plugin: runtimes bring lo up themselves (containerd's loopback
	// network, CRI-O's), and pods and port-forward rely on 127.0.0.1.
	if err := LoopbackUp(pod.NetNS); err != nil {
		return Result{}, fmt.Errorf("pod loopback: %w", err)
	}
	res, err := c.cni.AddNetworkList(ctx, c.list, rt)
	if err != nil {
		c.cni.DelNetworkList(ctx, c.list, rt)
		return Result{}, fmt.Errorf("CNI ADD (network %s): %w", c.list.Name, err)
	}
	cur, err := types100.NewResultFromResult(res)
	if err != nil {
		c.cni.DelNetworkList(ctx, c.list, rt)
		return Result{}, fmt.Errorf("CNI ADD (network %s) result: %w", c.list.Name, err)
	}
	if err := c.syncRecords(); err != nil {
		c.cni.DelNetworkList(ctx, c.list, rt)
		return Result{}, fmt.Errorf("CNI ADD (network %s): %w", c.list.Name, err)
	}
	var v4, v6 []net.IP
	for _, ip := range cur.IPs {
		if ip.Interface != nil && *ip.Interface < len(cur.Interfaces) && cur.Interfaces[*ip.Interface].Name != cniIfName {
			continue
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.To4())
		} else {
			v6 = append(v6, ip.Address.IP)
		}
	}
	return Result{IPs: append(v4, v6...), Backend: BackendCNI}, nil
}

// Check runs CHECK against the pod's recorded attachment.
func (c *CNI) Check(ctx context.Context, pod Pod) error {
	rt, err := c.runtimeConf(pod)
	if err != nil {
		return err
	}
	if err := c.cni.CheckNetworkList(ctx, c.list, rt); err != nil {
		return fmt.Errorf("CNI CHECK (network %s): %w", c.list.Name, err)
	}
	return nil
}

// TeardownPod runs DEL, which plugins make idempotent. Bad bandwidth
// annotations do not block it: DEL runs without that capability.
func (c *CNI) TeardownPod(ctx context.Context, pod Pod) error {
	rt, err := c.runtimeConf(pod)
	if err != nil {
		pod.Annotations = nil
		rt, _ = c.runtimeConf(pod)
	}
	if err := c.cni.DelNetworkList(ctx, c.list, rt); err != nil {
		return fmt.Errorf("CNI DEL (network %s): %w", c.list.Name, err)
	}
	return nil
}

// DetachPod runs DEL before the stop returns, as containerd and CRI-O do:
// DEL is the plugins' one teardown call, the IPAM plugin frees the address
// inside it, and a plugin cannot be told to keep it until the interface is
// gone. Run later, an address freed while the dying namespace still held
// it could be handed to a new pod.
func (c *CNI) DetachPod(ctx context.Context, pod Pod) (func(context.Context) error, error) {
	return nil, c.TeardownPod(ctx, pod)
}

// Reconcile runs DEL for every cached attachment of a pod not in live, and
// removes the host-local allocations a power cut emptied.
func (c *CNI) Reconcile(ctx context.Context, live []string) error {
	var errs []error
	removed, err := c.removeEmptiedAllocations()
	for _, p := range removed {
		c.log.Warn("removed an IP allocation a power cut emptied (it names no pod, no DEL could release it)", "file", p)
	}
	if err != nil {
		errs = append(errs, err)
	}
	atts, err := goneAttachments(c.cni, live)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, a := range atts {
		if a.Network != c.list.Name {
			continue
		}
		// No netns: the pod's pause is gone, and its /proc path may now
		// name another process's namespace.
		rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		if err := c.cni.DelNetworkList(ctx, c.list, rt); err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL of gone pod %s: %w", a.ContainerID, err))
		}
	}
	return errors.Join(errs...)
}

// goneAttachments are the attachments in libcni's cache of the pods not in
// live.
func goneAttachments(cni libcni.CNI, live []string) ([]*libcni.NetworkAttachment, error) {
	atts, err := cni.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("list CNI attachments: %w", err)
	}
	isLive := map[string]bool{}
	for _, id := range live {
		isLive[id] = true
	}
	gone := atts[:0]
	for _, a := range atts {
		if !isLive[a.ContainerID] {
			gone = append(gone, a)
		}
	}
	return gone, nil
}
