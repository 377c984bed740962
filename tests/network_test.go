package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// The network tests send traffic only between this host and the pods'
// network namespaces: to the host side of a pod's network, to the pod
// through a forwarded port on the host's own addresses, and to loopback
// through QEMU's user-mode gateway.

// lineServer accepts connections on addr and sends the first line of each
// to the returned channel.
func lineServer(t *testing.T, addr string) (int, <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	lines := make(chan string, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			lines <- strings.TrimSpace(line)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, lines
}

func receive(t *testing.T, lines <-chan string, res *stage0.Result) string {
	t.Helper()
	select {
	case line := <-lines:
		return line
	default:
		t.Fatalf("the server received nothing from the guest; exit status %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
		return ""
	}
}

// netnsPath is where the run entrypoint creates a pod's network namespace.
func netnsPath(uuid string) string { return "/var/run/netns/stage1-vm-" + uuid }

func checkNetNSGone(t *testing.T, uuid string) {
	t.Helper()
	if _, err := os.Stat(netnsPath(uuid)); err == nil {
		t.Errorf("network namespace %s remains", netnsPath(uuid))
	}
}

func TestNetDefaultGuestReachesHost(t *testing.T) {
	d := newDriver(t)
	port, lines := lineServer(t, "0.0.0.0:0")
	script := fmt.Sprintf(`gw=$(ip route | awk '/^default/ {print $3}')
addr=$(ip -4 -o addr show dev eth0 | awk '{print $4}')
echo "gw=$gw addr=$addr"
echo "guest $addr" | nc "$gw" %d`, port)
	res := run(t, d, []stage0.App{busyboxApp(t, "client", "/bin/sh", "-c", script)}, []string{"--net=default"})
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "gw=172.16.28.1 ") {
		t.Errorf("stdout %q: the default route does not go through 172.16.28.1", res.Stdout)
	}
	line := receive(t, lines, res)
	if !regexp.MustCompile(`^guest 172\.16\.28\.\d+/24$`).MatchString(line) {
		t.Errorf("server received %q, want the guest's address in 172.16.28.0/24", line)
	}
	checkNetNSGone(t, res.UUID)
}

func TestNetHostUserMode(t *testing.T) {
	d := newDriver(t)
	port, lines := lineServer(t, "127.0.0.1:0")
	script := fmt.Sprintf(`echo host-mode | nc 10.0.2.2 %d`, port)
	res := run(t, d, []stage0.App{busyboxApp(t, "client", "/bin/sh", "-c", script)}, []string{"--net=host"})
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if line := receive(t, lines, res); line != "host-mode" {
		t.Errorf("server on host loopback received %q, want host-mode", line)
	}
}

// freePort returns a TCP port that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// httpApp serves "<body>\n" on port 80 of the guest.
func httpApp(t *testing.T, body string) stage0.App {
	app := busyboxApp(t, "web", "/bin/sh", "-c", "mkdir -p /tmp/www && echo "+body+" > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www")
	app.App.Ports = []types.Port{{Name: "http", Protocol: "tcp", Port: 80, Count: 1}}
	return app
}

// fetchUntil gets url until it answers 200 or the pod exits.
func fetchUntil(t *testing.T, url string, pod *stage0.Pod, deadline time.Duration) (string, error) {
	client := &http.Client{Timeout: 3 * time.Second}
	var lastErr error
	for end := time.Now().Add(deadline); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if pod.Exited() {
			return "", fmt.Errorf("the pod exited before %s answered (last error: %v)", url, lastErr)
		}
		resp, err := client.Get(url)
		if err != nil {
			lastErr = err
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			return string(body), nil
		}
		lastErr = fmt.Errorf("status %d, body %q, error %v", resp.StatusCode, body, err)
	}
	return "", fmt.Errorf("%s did not answer within %s: %v", url, deadline, lastErr)
}

// hostAddress returns an IPv4 address of one of the host's own
// interfaces other than loopback and the pods' links.
func hostAddress() string {
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 || strings.HasPrefix(iface.Name, "veth") {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return ""
}

func startServer(t *testing.T, d *stage0.Driver, args []string, hostPort int, apps ...stage0.App) *stage0.Pod {
	t.Helper()
	pod, err := d.Start(apps, stage0.Options{
		Args:  args,
		Env:   tcg,
		Ports: []types.ExposedPort{{Name: "http", HostPort: uint(hostPort)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pod.Close() })
	return pod
}

func stopServer(t *testing.T, pod *stage0.Pod) {
	t.Helper()
	if err := pod.Stop(false); err != nil {
		t.Error(err)
	}
	res, err := pod.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := pod.Close(); err != nil {
		t.Error(err)
	}
	checkNetNSGone(t, res.UUID)
}

func TestNetPortForwardDefault(t *testing.T) {
	d := newDriver(t)
	hostPort := freePort(t)
	pod := startServer(t, d, []string{"--net=default"}, hostPort, httpApp(t, "forwarded-ok"))

	body, err := fetchUntil(t, fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort), pod, 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if body != "forwarded-ok\n" {
		t.Errorf("body on localhost = %q, want forwarded-ok", body)
	}
	if addr := hostAddress(); addr != "" {
		body, err := fetchUntil(t, fmt.Sprintf("http://%s:%d/index.html", addr, hostPort), pod, 30*time.Second)
		if err != nil {
			t.Error(err)
		} else if body != "forwarded-ok\n" {
			t.Errorf("body on %s = %q, want forwarded-ok", addr, body)
		}
	} else {
		t.Log("the host has no IPv4 address besides loopback; only localhost was checked")
	}
	stopServer(t, pod)
}

func TestNetPortForwardHostMode(t *testing.T) {
	d := newDriver(t)
	hostPort := freePort(t)
	pod := startServer(t, d, []string{"--net=host"}, hostPort, httpApp(t, "slirp-forwarded"))
	body, err := fetchUntil(t, fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort), pod, 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if body != "slirp-forwarded\n" {
		t.Errorf("body = %q, want slirp-forwarded", body)
	}
	stopServer(t, pod)
}

// writeNetConf writes a network configuration into the driver's local
// configuration folder and returns the --local-config flag.
func writeNetConf(t *testing.T, d *stage0.Driver, file, conf string) string {
	t.Helper()
	dir := filepath.Join(d.DataDir, "local-config")
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "net.d", file), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return "--local-config=" + dir
}

func TestNetBadInputLeavesNothing(t *testing.T) {
	d := newDriver(t)
	localConfig := filepath.Join(d.DataDir, "local-config")
	writeNetConf(t, d, "10-broken.conf", `{"name": "broken", "type": `)
	os.MkdirAll(filepath.Join(localConfig, "other"), 0o755)
	cases := []struct {
		name  string
		args  []string
		ports []types.ExposedPort
		conf  [2]string
		want  string
	}{
		{name: "unknown network", args: []string{"--net=nosuchnet", "--local-config=" + filepath.Join(localConfig, "other")}, want: "nosuchnet"},
		{name: "bad IP argument", args: []string{"--net=default:IP=10.1.1.x"}, want: "10.1.1.x"},
		{name: "bad conf file", args: []string{"--net=default", "--local-config=" + localConfig}, want: "10-broken.conf"},
		{name: "unknown port name", args: []string{"--net=default"}, ports: []types.ExposedPort{{Name: "nosuchport", HostPort: 8080}}, want: "nosuchport"},
		{name: "ports without network", args: []string{"--net=none"}, ports: []types.ExposedPort{{Name: "http", HostPort: 8080}}, want: "--net=none"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			app := httpApp(t, "unused")
			res, err := d.Run([]stage0.App{app}, stage0.Options{Args: c.args, Env: tcg, Ports: c.ports})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 254 {
				t.Errorf("exit status %d, want 254; stderr:\n%s", res.ExitCode, res.Stderr)
			}
			if !strings.Contains(res.Stderr, c.want) {
				t.Errorf("stderr %q does not name %q", res.Stderr, c.want)
			}
			checkNetNSGone(t, res.UUID)
		})
	}
}

func TestNetMissingPluginLeavesNothing(t *testing.T) {
	d := newDriver(t)
	flag := writeNetConf(t, d, "10-missing.conf", `{"cniVersion": "0.4.0", "name": "missing", "type": "nosuchplugin"}`)
	before := netSnapshot(t, d.DataDir)
	res := run(t, d, []stage0.App{busyboxApp(t, "true", "/bin/true")}, []string{"--net=missing", flag})
	if res.ExitCode != 254 || !strings.Contains(res.Stderr, "nosuchplugin") {
		t.Errorf("exit status %d, stderr %q; want 254 and an error naming nosuchplugin", res.ExitCode, res.Stderr)
	}
	checkNetNSGone(t, res.UUID)
	compareSnapshots(t, before, netSnapshot(t, d.DataDir))
}

// TestNetFailedAddIsDeleted makes the second plugin of a list fail, so the
// first one's ADD must be undone.
func TestNetFailedAddIsDeleted(t *testing.T) {
	d := newDriver(t)
	flag := writeNetConf(t, d, "10-fails.conflist", `{"cniVersion": "0.4.0", "name": "fails", "plugins": [
	{"type": "ptp", "ipMasq": true, "ipam": {"type": "host-local", "subnet": "172.30.99.0/24"}},
	{"type": "tuning", "sysctl": {"net.nosuch.key": "1"}}]}`)
	before := netSnapshot(t, d.DataDir)
	res := run(t, d, []stage0.App{busyboxApp(t, "true", "/bin/true")}, []string{"--net=fails", flag})
	if res.ExitCode != 254 || !strings.Contains(res.Stderr, "fails") {
		t.Errorf("exit status %d, stderr %q; want 254 and an error naming the network", res.ExitCode, res.Stderr)
	}
	checkNetNSGone(t, res.UUID)
	compareSnapshots(t, before, netSnapshot(t, d.DataDir))
}

// netSnapshot records the host's network state that a pod may change.
// Counters, and host-local's last_reserved_ip files, which only say where
// the next allocation starts, are left out.
// Mounts under other data folders of the tests are left out, because
// other test runs on the machine may start pods meanwhile.
// isOtherPodMount reports whether a mount point belongs to a pod or test
// image folder, which other tests and rkt runs on this machine create and
// remove while a snapshot is taken.
func isOtherPodMount(p string) bool {
	return strings.HasPrefix(p, filepath.Join(os.TempDir(), "s1vm-")) ||
		strings.Contains(p, "/pods/run/") || strings.Contains(p, "/pods/exited-garbage/")
}

func netSnapshot(t *testing.T, dataDir string) map[string][]string {
	t.Helper()
	snap := map[string][]string{}
	runLines := func(key string, name string, args ...string) {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			lines = append(lines, regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(l, ""))
		}
		snap[key] = lines
	}
	runLines("iptables", "iptables-save")
	runLines("netns", "ip", "netns", "list")
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			snap["links"] = append(snap["links"], f[1])
		}
	}
	for _, dir := range []string{"/var/lib/cni/networks", "/var/lib/cni/results"} {
		filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() && !strings.HasPrefix(info.Name(), "last_reserved_ip") && info.Name() != "lock" {
				snap["cni"] = append(snap["cni"], path)
			}
			return nil
		})
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || (isOtherPodMount(f[4]) && !strings.HasPrefix(f[4], dataDir)) {
			continue
		}
		snap["mounts"] = append(snap["mounts"], f[4])
	}
	for k := range snap {
		sort.Strings(snap[k])
	}
	return snap
}

func compareSnapshots(t *testing.T, before, after map[string][]string) {
	t.Helper()
	for _, key := range []string{"iptables", "netns", "links", "cni", "mounts"} {
		b, a := strings.Join(before[key], "\n"), strings.Join(after[key], "\n")
		if a != b {
			t.Errorf("%s changed:\nbefore:\n%s\nafter:\n%s", key, b, a)
		}
	}
}

// TestNetNoLeaks runs pods with a forwarded port on the default network,
// then gc, and checks that the host's rules, leases, namespaces, links
// and mounts are as before. S1VM_LEAK_PODS sets the number of pods.
func TestNetNoLeaks(t *testing.T) {
	d := newDriver(t)
	count := 3
	if v := os.Getenv("S1VM_LEAK_PODS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("invalid S1VM_LEAK_PODS=%q: want a positive number", v)
		}
		count = n
	}
	app := busyboxApp(t, "short", "/bin/sh", "-c", "ip -4 -o addr show dev eth0 | awk '{print $4}'")
	app.App.Ports = []types.Port{{Name: "http", Protocol: "tcp", Port: 80, Count: 1}}
	// A first pod makes /var/run/netns a mount point, as `ip netns add`
	// does, and makes portmap create its chains shared by all pods. Both
	// stay.
	warmup, err := d.Run([]stage0.App{app}, stage0.Options{
		Args:  []string{"--net=default"},
		Env:   tcg,
		Ports: []types.ExposedPort{{Name: "http", HostPort: 20000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if warmup.ExitCode != 0 {
		t.Fatalf("warm-up pod: exit status %d, stderr:\n%s", warmup.ExitCode, warmup.Stderr)
	}
	before := netSnapshot(t, d.DataDir)
	for i := 0; i < count; i++ {
		res, err := d.Run([]stage0.App{app}, stage0.Options{
			Args:  []string{"--net=default"},
			Env:   tcg,
			Ports: []types.ExposedPort{{Name: "http", HostPort: uint(20000 + i%1000)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "172.16.28.") {
			t.Fatalf("pod %d: exit status %d, stdout %q, stderr:\n%s", i, res.ExitCode, res.Stdout, res.Stderr)
		}
	}
	t.Logf("ran %d pods", count)
	compareSnapshots(t, before, netSnapshot(t, d.DataDir))
}

// removeLink deletes a host link that a plugin creates and keeps, such as
// the bridge plugin's bridge.
func removeLink(t *testing.T, name string) {
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
}

func TestNetBridgeAndRestrictedTwoNetworks(t *testing.T) {
	d := newDriver(t)
	removeLink(t, "s1vmbr0")
	flag := writeNetConf(t, d, "10-bridged.conf", `{"cniVersion": "0.4.0", "name": "bridged", "type": "bridge",
	"bridge": "s1vmbr0", "isGateway": true, "ipMasq": false,
	"ipam": {"type": "host-local", "subnet": "172.30.1.0/24", "routes": [{"dst": "0.0.0.0/0"}]}}`)
	port, lines := lineServer(t, "0.0.0.0:0")
	script := fmt.Sprintf(`ip -4 -o addr | awk '{print $2, $4}'
ip route | grep -q '^default via 172.30.1.1 dev eth0' && echo default-via-eth0
ip route | grep '^default' | grep -q eth1 && echo default-via-eth1
echo bridged | nc 172.30.1.1 %d`, port)
	res := run(t, d, []stage0.App{busyboxApp(t, "two", "/bin/sh", "-c", script)},
		[]string{"--net=bridged:IP=172.30.1.50,default-restricted", flag})
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "eth0 172.30.1.50/24\n") {
		t.Errorf("stdout %q: eth0 lacks the address 172.30.1.50/24 asked for with IP=", res.Stdout)
	}
	if !regexp.MustCompile(`eth1 172\.31\.\d+\.\d+/16\n`).MatchString(res.Stdout) {
		t.Errorf("stdout %q: eth1 has no address of default-restricted (172.31.0.0/16)", res.Stdout)
	}
	if !strings.Contains(res.Stdout, "default-via-eth0") {
		t.Errorf("stdout %q: the default route is not through the first network", res.Stdout)
	}
	if strings.Contains(res.Stdout, "default-via-eth1") {
		t.Errorf("stdout %q: default-restricted gave a default route", res.Stdout)
	}
	if line := receive(t, lines, res); line != "bridged" {
		t.Errorf("server received %q through the bridge, want bridged", line)
	}
	checkNetNSGone(t, res.UUID)
}

// TestNetChainedPluginsConflist runs a conflist with ptp, tuning,
// bandwidth, firewall and portmap under a network name of more than 20
// characters with ipMasq.
func TestNetChainedPluginsConflist(t *testing.T) {
	d := newDriver(t)
	const name = "chained-long-network-name"
	flag := writeNetConf(t, d, "20-chained.conflist", `{"cniVersion": "1.0.0", "name": "`+name+`", "plugins": [
	{"type": "ptp", "ipMasq": true, "ipam": {"type": "host-local", "subnet": "172.30.2.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
	{"type": "tuning", "mtu": 1400},
	{"type": "bandwidth", "ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000},
	{"type": "firewall"},
	{"type": "portmap", "capabilities": {"portMappings": true}}]}`)
	hostPort := freePort(t)
	app := busyboxApp(t, "web", "/bin/sh", "-c", "cat /sys/class/net/eth0/mtu > /tmp/mtu; mkdir -p /tmp/www && ip -4 -o addr show dev eth0 | awk '{print $4}' > /tmp/www/addr && cp /tmp/mtu /tmp/www/mtu && exec httpd -f -p 80 -h /tmp/www")
	app.App.Ports = []types.Port{{Name: "http", Protocol: "tcp", Port: 80, Count: 1}}
	pod := startServer(t, d, []string{"--net=" + name, flag}, hostPort, app)

	addr, err := fetchUntil(t, fmt.Sprintf("http://127.0.0.1:%d/addr", hostPort), pod, 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "172.30.2.") {
		t.Errorf("guest address %q, want one in 172.30.2.0/24", addr)
	}
	mtu, err := fetchUntil(t, fmt.Sprintf("http://127.0.0.1:%d/mtu", hostPort), pod, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if mtu != "1400\n" {
		t.Errorf("guest eth0 MTU %q, want 1400 from the tuning plugin", mtu)
	}
	info, err := os.ReadFile(filepath.Join(pod.Dir, "net-info.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(info), `"netName":"`+name+`"`) || !strings.Contains(string(info), `"ip":"`+strings.TrimSpace(addr)[:strings.Index(addr, "/")]+`"`) {
		t.Errorf("net-info.json = %s, want the network %s with the guest's address", info, name)
	}
	stopServer(t, pod)
}

// TestNetDNSAndMetadataURL checks that the DNS settings a network's plugins
// return become the app's /etc/resolv.conf in the default mode, and that
// --mds-token gives apps AC_METADATA_URL on the host side of the network.
func TestNetDNSAndMetadataURL(t *testing.T) {
	d := newDriver(t)
	flag := writeNetConf(t, d, "30-dns.conf", `{"cniVersion": "0.4.0", "name": "withdns", "type": "ptp", "ipMasq": false,
	"ipam": {"type": "host-local", "subnet": "172.30.3.0/24"},
	"dns": {"nameservers": ["192.0.2.53"], "search": ["example.com"]}}`)
	app := busyboxApp(t, "dns", "/bin/sh", "-c", `cat /etc/resolv.conf; echo "$AC_METADATA_URL"`)
	res := run(t, d, []stage0.App{app}, []string{"--net=withdns", flag, "--mds-token=0123abcd"})
	wantOutput(t, res, "nameserver 192.0.2.53\nsearch example.com\nhttp://172.30.3.1:18112/0123abcd\n")

	res = run(t, d, []stage0.App{app}, []string{"--net=withdns", flag, "--dns-conf-mode=resolv=none"})
	if strings.Contains(res.Stdout, "192.0.2.53") {
		t.Errorf("with resolv=none the plugin's DNS reached the app: %q", res.Stdout)
	}
}

// TestNetMacvlanStatic attaches the pod through macvlan on one end of a
// veth pair that the test creates, with a static address, and has the
// guest connect to a server on the pair's other end.
func TestNetMacvlanStatic(t *testing.T) {
	d := newDriver(t)
	const master, peer = "s1vmmvA", "s1vmmvB"
	for _, cmd := range [][]string{
		{"link", "add", master, "type", "veth", "peer", "name", peer},
		{"addr", "add", "10.99.0.1/24", "dev", peer},
		{"link", "set", master, "up"},
		{"link", "set", peer, "up"},
	} {
		if out, err := exec.Command("ip", cmd...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", cmd, err, out)
		}
	}
	removeLink(t, master)
	flag := writeNetConf(t, d, "40-macvlan.conf", `{"cniVersion": "1.0.0", "name": "mv", "type": "macvlan",
	"master": "`+master+`", "mode": "bridge",
	"ipam": {"type": "static", "addresses": [{"address": "10.99.0.5/24"}]}}`)
	port, lines := lineServer(t, "10.99.0.1:0")
	script := fmt.Sprintf(`ip -4 -o addr show dev eth0 | awk '{print $4}'; echo "from macvlan" | nc 10.99.0.1 %d`, port)
	res := run(t, d, []stage0.App{busyboxApp(t, "mv", "/bin/sh", "-c", script)}, []string{"--net=mv", flag})
	wantOutput(t, res, "10.99.0.5/24\n")
	if line := receive(t, lines, res); line != "from macvlan" {
		t.Errorf("server received %q, want the guest's line", line)
	}
	checkNetNSGone(t, res.UUID)
}

// TestNetTeardownAfterCrashes kills QEMU of a networked pod, which the run
// entrypoint must notice and tear the network down, and then kills the run
// entrypoint of another, which gc must clean up after. Both leave the host
// as it was.
func TestNetTeardownAfterCrashes(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "sleeper", "/bin/sh", "-c", "sleep 600")
	start := func() *stage0.Pod {
		pod, err := d.Start([]stage0.App{app}, stage0.Options{Env: tcg, Args: []string{"--net=default"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pod.Close() })
		for deadline := time.Now().Add(60 * time.Second); !pod.Ready(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("pod did not report ready within 60 s")
			}
		}
		return pod
	}
	// A first pod makes the shared portmap chains and /var/run/netns exist.
	warmup := start()
	if err := warmup.Stop(true); err != nil {
		t.Fatal(err)
	}
	waitResult(t, warmup, 30*time.Second)
	warmup.Close()
	before := netSnapshot(t, d.DataDir)

	killedQEMU := start()
	if err := syscall.Kill(qemuPID(t, killedQEMU), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitResult(t, killedQEMU, 30*time.Second)
	checkNetNSGone(t, killedQEMU.UUID)
	killedQEMU.Close()

	killedRun := start()
	if err := killedRun.Process().Kill(); err != nil {
		t.Fatal(err)
	}
	waitResult(t, killedRun, 30*time.Second)
	if err := killedRun.GC(); err != nil {
		t.Fatalf("gc after the run entrypoint was killed: %v", err)
	}
	checkNetNSGone(t, killedRun.UUID)
	// Close unmounts the pod's overlays, as rkt does after gc.
	killedRun.Close()
	compareSnapshots(t, before, netSnapshot(t, d.DataDir))
}
