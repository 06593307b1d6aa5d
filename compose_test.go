// Tests of the deployment files at the repository root: docker-compose.yml, the Dockerfile and
// what compose mounts from deploy/. They load the compose file with compose-go, the library
// docker compose itself uses, so a file that passes here is one docker compose accepts; the
// tenant catalogue with pkg/tenant, the loader the roles use; and they check each role's command
// and environment against the subcommands and flags of the maumeter binary, built from
// ./cmd/maumeter. They need neither Docker nor the network.
package maumeter_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/internal/clock"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// composeRole is a maumeter service of docker-compose.yml: the subcommand it runs, the port of
// its HTTP listener (/healthz, /readyz; empty for one-shot jobs; its admin listener of /metrics
// is composeAdminPort), whether it reads or writes ClickHouse, and the services it waits for.
type composeRole struct {
	name       string
	command    string
	port       string
	clickhouse bool
	dependsOn  map[string]string // service → condition
}

var afterMigrate = map[string]string{"migrate": types.ServiceConditionCompletedSuccessfully}

// composeBrokers are the Kafka services of docker-compose.yml, three as in production: each a
// broker and a controller of the one KRaft quorum. The roles' topics get a replica on each
// (replication factor 3) and min.insync.replicas 2, so any one broker may be down.
var composeBrokers = []string{"kafka-1", "kafka-2", "kafka-3"}

var composeRoles = []composeRole{
	{"migrate", "migrate", "", true, migrateDependsOn()},
	{"ingest", "ingest", "8080", false, afterMigrate},
	{"count", "count", "9464", true, afterMigrate},
	{"rate", "rate", "9465", true, afterMigrate},
	{"archive", "archive", "9467", true, afterMigrate},
}

// migrateDependsOn: migrate creates the topics, with a replica on every broker, once all of
// them and ClickHouse are healthy.
func migrateDependsOn() map[string]string {
	deps := map[string]string{"clickhouse": types.ServiceConditionHealthy}
	for _, b := range composeBrokers {
		deps[b] = types.ServiceConditionHealthy
	}
	return deps
}

const (
	// composeAdminPort is every role's admin listener (/metrics, /debug/pprof/): Prometheus
	// scrapes it on the compose network, and it is never published.
	composeAdminPort   = "9466"
	composeImage       = "maumeter:dev" // ${MAUMETER_IMAGE:-maumeter:dev} with no environment
	composeTenantsPath = "/etc/maumeter/tenants.yaml"
	composeCHSecret    = "clickhouse_password" // the secret of the ClickHouse password
)

// composeSecrets are the variables docker-compose.yml requires (it has no default passwords);
// the tests set them to these values.
var composeSecrets = map[string]string{
	"MAUMETER_CLICKHOUSE_PASSWORD": "test-clickhouse-secret",
	"GRAFANA_ADMIN_PASSWORD":       "test-grafana-secret",
}

// loadCompose loads docker-compose.yml as docker compose would, with interpolation against an
// environment holding only composeSecrets (so the file's other defaults apply), paths resolved
// against the repository root, and compose-go's schema and consistency checks on.
func loadCompose(t *testing.T) (*types.Project, string) {
	t.Helper()
	var env []string
	for k, v := range composeSecrets {
		env = append(env, k+"="+v)
	}
	p, dir, err := loadComposeEnv(t, env)
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p, dir
}

func loadComposeEnv(t *testing.T, env []string) (*types.Project, string, error) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(env),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	return p, dir, err
}

// No default passwords: without each required secret the file does not load, and the error
// names the variable; with them, the services get exactly those values.
func TestComposeRequiresPasswords(t *testing.T) {
	for missing := range composeSecrets {
		var env []string
		for k, v := range composeSecrets {
			if k != missing {
				env = append(env, k+"="+v)
			}
		}
		_, _, err := loadComposeEnv(t, env)
		if err == nil || !strings.Contains(err.Error(), "required variable "+missing+" is missing") {
			t.Errorf("without %s: got error %v, want one saying it is required", missing, err)
		}
	}
	p, _ := loadCompose(t)
	for svc, kv := range map[string][2]string{
		"clickhouse": {"CLICKHOUSE_PASSWORD", composeSecrets["MAUMETER_CLICKHOUSE_PASSWORD"]},
		"grafana":    {"GF_SECURITY_ADMIN_PASSWORD", composeSecrets["GRAFANA_ADMIN_PASSWORD"]},
	} {
		if got := env(service(t, p, svc), kv[0]); got != kv[1] {
			t.Errorf("%s %s: got %q, want %q from the environment", svc, kv[0], got, kv[1])
		}
	}
	// The roles get the ClickHouse password as a secret file, from the same variable.
	if sec, ok := p.Secrets[composeCHSecret]; !ok || sec.Environment != "MAUMETER_CLICKHOUSE_PASSWORD" {
		t.Errorf("secret %s: got %+v, want one from the environment variable MAUMETER_CLICKHOUSE_PASSWORD", composeCHSecret, sec)
	}
	if got := env(service(t, p, "grafana"), "GF_AUTH_ANONYMOUS_ENABLED"); got != "false" {
		t.Errorf("grafana GF_AUTH_ANONYMOUS_ENABLED: got %q, want \"false\" unless asked for", got)
	}
}

// Every container has memory and CPU limits and a rotated json-file log.
func TestComposeLimitsAndLogs(t *testing.T) {
	p, _ := loadCompose(t)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		if s.Deploy == nil || s.Deploy.Resources.Limits == nil ||
			s.Deploy.Resources.Limits.MemoryBytes <= 0 || s.Deploy.Resources.Limits.NanoCPUs <= 0 {
			t.Errorf("%s: no deploy.resources.limits with memory and cpus", name)
		}
		if s.Logging == nil || s.Logging.Driver != "json-file" || s.Logging.Options["max-size"] == "" || s.Logging.Options["max-file"] == "" {
			t.Errorf("%s: logging %+v, want json-file with max-size and max-file", name, s.Logging)
		}
	}
}

// Compose runs the Kafka version scripts/kafka.sh runs (scripts/kafka/pom.xml).
func TestComposeKafkaVersionMatchesScripts(t *testing.T) {
	p, _ := loadCompose(t)
	pom, err := os.ReadFile("scripts/kafka/pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka\.version>([^<]+)</kafka\.version>`).FindSubmatch(pom)
	if m == nil {
		t.Fatal("scripts/kafka/pom.xml: no <kafka.version>")
	}
	for _, b := range composeBrokers {
		if got, want := service(t, p, b).Image, "apache/kafka:"+string(m[1]); got != want {
			t.Errorf("%s image: got %q, want %q (the version of scripts/kafka/pom.xml)", b, got, want)
		}
	}
}

// Compose runs Kafka as production does: the three brokers of composeBrokers form one cluster,
// each a voter of one KRaft quorum that names all three; every role lists all three and creates
// its topics with replication factor 3 and min.insync.replicas 2.
func TestComposeKafkaCluster(t *testing.T) {
	p, _ := loadCompose(t)
	for _, problem := range kafkaClusterProblems(p) {
		t.Error(problem)
	}
}

// kafkaClusterProblems cannot pass a file that loses a broker or its redundancy: each change
// below, applied to the loaded docker-compose.yml, is a problem it reports. Dropping kafka-3
// everywhere (its service, its vote, its address, migrate's wait for it, replication 2 and min
// ISR 1) leaves a consistent two-broker file, still refused.
func TestComposeKafkaClusterRefusesFewerReplicas(t *testing.T) {
	// Each problem below must come from its change, not from the file.
	if p, _ := loadCompose(t); len(kafkaClusterProblems(p)) > 0 {
		t.Fatal("docker-compose.yml has problems of its own (TestComposeKafkaCluster lists them)")
	}
	setEnv := func(svc, key, value string) func(*types.Project) {
		return func(p *types.Project) {
			s := p.Services[svc]
			s.Environment = maps.Clone(s.Environment)
			s.Environment[key] = &value
			p.Services[svc] = s
		}
	}
	dropBroker := func(p *types.Project) {
		const gone = "kafka-3"
		delete(p.Services, gone)
		for name, s := range p.Services {
			s.Environment = maps.Clone(s.Environment)
			for key, value := range map[string]string{
				"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@kafka-1:9093,2@kafka-2:9093",
				"MAUMETER_KAFKA_BROKERS":                         "kafka-1:9092,kafka-2:9092",
				"MAUMETER_REPLICATION_FACTOR":                    "2",
				"MAUMETER_MIN_INSYNC_REPLICAS":                   "1",
				"KAFKA_DEFAULT_REPLICATION_FACTOR":               "2",
				"KAFKA_MIN_INSYNC_REPLICAS":                      "1",
				"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "2",
				"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "2",
				"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			} {
				if _, ok := s.Environment[key]; ok {
					s.Environment[key] = &value
				}
			}
			s.DependsOn = maps.Clone(s.DependsOn)
			delete(s.DependsOn, gone)
			p.Services[name] = s
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*types.Project)
		want   string // in one of the problems
	}{
		{"kafka-3 dropped everywhere", dropBroker, "kafka brokers: got [kafka-1 kafka-2], want [kafka-1 kafka-2 kafka-3]"},
		{"kafka-3 not a voter of kafka-2's quorum", setEnv("kafka-2", "KAFKA_CONTROLLER_QUORUM_VOTERS", "1@kafka-1:9093,2@kafka-2:9093"),
			"kafka-2 KAFKA_CONTROLLER_QUORUM_VOTERS"},
		{"a voter at another controller port", setEnv("kafka-1", "KAFKA_CONTROLLER_QUORUM_VOTERS", "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9092"),
			"kafka-1 KAFKA_CONTROLLER_QUORUM_VOTERS"},
		{"two brokers with node id 2", setEnv("kafka-3", "KAFKA_NODE_ID", "2"), "node id 2 is also kafka-2's"},
		{"another cluster", setEnv("kafka-3", "CLUSTER_ID", "b3RoZXItY2x1c3Rlci0wMQ"), "kafka-3 CLUSTER_ID"},
		{"two brokers on one volume", func(p *types.Project) {
			s := p.Services["kafka-3"]
			s.Volumes = slices.Clone(s.Volumes)
			for i := range s.Volumes {
				s.Volumes[i].Source = "kafka-2-data"
			}
			p.Services["kafka-3"] = s
		}, "volume kafka-2-data is also kafka-2's"},
		{"a host listener advertised at another port", setEnv("kafka-3", "KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://kafka-3:9092,HOST://localhost:9095"),
			"kafka-3 KAFKA_ADVERTISED_LISTENERS"},
		{"two brokers on one host port", func(p *types.Project) {
			setEnv("kafka-3", "KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:9095")(p)
			setEnv("kafka-3", "KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://kafka-3:9092,HOST://localhost:9095")(p)
			s := p.Services["kafka-3"]
			s.Ports = slices.Clone(s.Ports)
			s.Ports[0].Target, s.Ports[0].Published = 9095, "9095"
			p.Services["kafka-3"] = s
		}, "host port 9095 is also kafka-2's"},
		{"a role that knows two brokers", setEnv("count", "MAUMETER_KAFKA_BROKERS", "kafka-1:9092,kafka-2:9092"), "count MAUMETER_KAFKA_BROKERS"},
		{"replication factor 1", setEnv("migrate", "MAUMETER_REPLICATION_FACTOR", "1"), "migrate MAUMETER_REPLICATION_FACTOR"},
		{"the defaults' replication factor", func(p *types.Project) {
			s := p.Services["ingest"]
			s.Environment = maps.Clone(s.Environment)
			delete(s.Environment, "MAUMETER_REPLICATION_FACTOR")
			p.Services["ingest"] = s
		}, "ingest MAUMETER_REPLICATION_FACTOR"},
		{"min.insync.replicas 1", setEnv("rate", "MAUMETER_MIN_INSYNC_REPLICAS", "1"), "rate MAUMETER_MIN_INSYNC_REPLICAS"},
		{"consumer offsets on one broker", setEnv("kafka-1", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"), "kafka-1 KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"},
		{"migrate not waiting for kafka-2", func(p *types.Project) {
			s := p.Services["migrate"]
			s.DependsOn = maps.Clone(s.DependsOn)
			delete(s.DependsOn, "kafka-2")
			p.Services["migrate"] = s
		}, "migrate depends_on kafka-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := loadCompose(t)
			tc.mutate(p)
			problems := kafkaClusterProblems(p)
			if !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("got problems %q, want one with %q", problems, tc.want)
			}
		})
	}
}

// kafkaClusterProblems checks the Kafka cluster of p against composeBrokers and returns what is
// wrong, one problem a string: the apache/kafka services are exactly the brokers; each is a
// broker and a controller with the cluster's one CLUSTER_ID, a node id of its own, its own data
// volume and host port, and the same voters, every broker at its controller listener; the
// internal topics and the broker defaults have a replica on each broker and take a write once
// all but one hold it; migrate waits for every broker to be healthy; every role lists each
// broker's address on the compose network and creates its topics with replication factor 3 and
// min.insync.replicas 2 (set in its environment, not left to the binary's defaults).
func kafkaClusterProblems(p *types.Project) []string {
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var brokers []string // the services of the Kafka image
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if strings.HasPrefix(p.Services[name].Image, "apache/kafka:") {
			brokers = append(brokers, name)
		}
	}
	if !slices.Equal(brokers, composeBrokers) {
		problem("kafka brokers: got %v, want %v", brokers, composeBrokers)
	}
	replicas := strconv.Itoa(len(composeBrokers))
	minISR := strconv.Itoa(len(composeBrokers) - 1)

	var (
		clusterID  string
		voters     []string              // id@service:controller port, one per broker
		addrs      []string              // each broker's address on the compose network
		nodeOf     = map[string]string{} // node id → broker
		volumeOf   = map[string]string{} // data volume → broker
		hostPortOf = map[string]string{} // published host port → broker
	)
	for _, b := range brokers {
		s := p.Services[b]
		settings := map[string]string{
			"KAFKA_PROCESS_ROLES":                                    "broker,controller",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                        "CONTROLLER",
			"KAFKA_INTER_BROKER_LISTENER_NAME":                       "PLAINTEXT",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                        "false",
			"KAFKA_DEFAULT_REPLICATION_FACTOR":                       replicas,
			"KAFKA_MIN_INSYNC_REPLICAS":                              minISR,
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 replicas,
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         replicas,
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    minISR,
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": replicas,
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            minISR,
		}
		for _, key := range slices.Sorted(maps.Keys(settings)) {
			if got, want := env(s, key), settings[key]; got != want {
				problem("%s %s: got %q, want %q", b, key, got, want)
			}
		}

		id := env(s, "CLUSTER_ID")
		if raw, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(raw) != 16 {
			problem("%s CLUSTER_ID: got %q, want a base64url UUID (16 bytes, 22 characters)", b, id)
		}
		if clusterID == "" {
			clusterID = id
		} else if id != clusterID {
			problem("%s CLUSTER_ID: got %q, want the cluster's %q", b, id, clusterID)
		}

		node := env(s, "KAFKA_NODE_ID")
		if n, err := strconv.Atoi(node); err != nil || n < 0 {
			problem("%s KAFKA_NODE_ID: got %q, want a node id (an integer ≥ 0)", b, node)
		} else if other, ok := nodeOf[node]; ok {
			problem("%s KAFKA_NODE_ID: node id %s is also %s's", b, node, other)
		}
		nodeOf[node] = b

		listeners := kafkaListeners(env(s, "KAFKA_LISTENERS"))
		protocols := kafkaListeners(env(s, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"))
		for _, name := range slices.Sorted(maps.Keys(listeners)) {
			if _, ok := protocols[name]; !ok {
				problem("%s KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: got %v, want a protocol for listener %s", b, protocols, name)
			}
		}
		_, cport, _ := net.SplitHostPort(listeners["CONTROLLER"])
		if cport == "" {
			problem("%s KAFKA_LISTENERS: got %q, want a CONTROLLER listener", b, env(s, "KAFKA_LISTENERS"))
		}
		voters = append(voters, node+"@"+b+":"+cport)

		// PLAINTEXT is the listener of the other brokers and the roles, at the service's name;
		// HOST the one of clients on the host, at a loopback port of its own.
		advertised := kafkaListeners(env(s, "KAFKA_ADVERTISED_LISTENERS"))
		_, port, _ := net.SplitHostPort(listeners["PLAINTEXT"])
		if want := b + ":" + port; port == "" || advertised["PLAINTEXT"] != want {
			problem("%s KAFKA_ADVERTISED_LISTENERS: got %q, want PLAINTEXT://%s (its PLAINTEXT listener at its service name)",
				b, env(s, "KAFKA_ADVERTISED_LISTENERS"), want)
		}
		addrs = append(addrs, advertised["PLAINTEXT"])
		_, hostPort, _ := net.SplitHostPort(listeners["HOST"])
		if advertised["HOST"] != "localhost:"+hostPort {
			problem("%s KAFKA_ADVERTISED_LISTENERS: got %q, want HOST://localhost:%s (its HOST listener's port)",
				b, env(s, "KAFKA_ADVERTISED_LISTENERS"), hostPort)
		}
		if !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool {
			return pc.HostIP == "127.0.0.1" && pc.Published == hostPort && strconv.Itoa(int(pc.Target)) == hostPort
		}) {
			problem("%s ports: got %+v, want 127.0.0.1:%s:%s (its HOST listener)", b, s.Ports, hostPort, hostPort)
		}
		if other, ok := hostPortOf[hostPort]; ok {
			problem("%s KAFKA_ADVERTISED_LISTENERS: host port %s is also %s's", b, hostPort, other)
		}
		hostPortOf[hostPort] = b

		logDirs := env(s, "KAFKA_LOG_DIRS")
		i := slices.IndexFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == logDirs
		})
		if logDirs == "" || i < 0 {
			problem("%s volumes: got %v, want a named volume at KAFKA_LOG_DIRS (%q)", b, s.Volumes, logDirs)
		} else if v := s.Volumes[i].Source; volumeOf[v] != "" {
			problem("%s volumes: volume %s is also %s's", b, v, volumeOf[v])
		} else {
			volumeOf[v] = b
		}

		if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 {
			problem("%s healthcheck: got %+v, want a test command", b, hc)
		}
		if dep, ok := p.Services["migrate"].DependsOn[b]; !ok || dep.Condition != types.ServiceConditionHealthy {
			problem("migrate depends_on %s: got %+v, want condition %s: the topics get a replica on every broker",
				b, dep, types.ServiceConditionHealthy)
		}
	}

	slices.Sort(voters)
	for _, b := range brokers {
		got := strings.Split(env(p.Services[b], "KAFKA_CONTROLLER_QUORUM_VOTERS"), ",")
		if slices.Sort(got); !slices.Equal(got, voters) {
			problem("%s KAFKA_CONTROLLER_QUORUM_VOTERS: got %q, want every broker at its controller listener, %q", b, got, voters)
		}
	}

	slices.Sort(addrs)
	for _, r := range composeRoles {
		s, ok := p.Services[r.name]
		if !ok {
			continue // TestComposeServices reports it
		}
		got := strings.Split(env(s, "MAUMETER_KAFKA_BROKERS"), ",")
		if slices.Sort(got); !slices.Equal(got, addrs) {
			problem("%s MAUMETER_KAFKA_BROKERS: got %q, want every broker, %q", r.name, got, addrs)
		}
		if got := env(s, "MAUMETER_REPLICATION_FACTOR"); got != replicas {
			problem("%s MAUMETER_REPLICATION_FACTOR: got %q, want %q: a replica on each broker", r.name, got, replicas)
		}
		if got := env(s, "MAUMETER_MIN_INSYNC_REPLICAS"); got != minISR {
			problem("%s MAUMETER_MIN_INSYNC_REPLICAS: got %q, want %q: one broker may be down", r.name, got, minISR)
		}
	}
	return problems
}

// kafkaListeners parses a Kafka list of NAME://host:port (listeners) or NAME:PROTOCOL (the
// security protocol map) into name → host:port or protocol.
func kafkaListeners(list string) map[string]string {
	m := map[string]string{}
	for item := range strings.SplitSeq(list, ",") {
		name, rest, ok := strings.Cut(strings.TrimSpace(item), ":")
		if ok {
			m[name] = strings.TrimPrefix(rest, "//")
		}
	}
	return m
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

func TestComposeServices(t *testing.T) {
	p, _ := loadCompose(t)
	want := append([]string{"clickhouse", "prometheus", "grafana"}, composeBrokers...)
	for _, r := range composeRoles {
		want = append(want, r.name)
	}
	slices.Sort(want)
	got := slices.Sorted(maps.Keys(p.Services))
	if !slices.Equal(got, want) {
		t.Errorf("services:\n got %v\nwant %v", got, want)
	}
	if p.Name != "maumeter" {
		t.Errorf("project name: got %q, want %q", p.Name, "maumeter")
	}
}

func TestComposeInfrastructure(t *testing.T) {
	p, _ := loadCompose(t)
	for _, tc := range []struct {
		service     string
		imagePrefix string
		env         map[string]string
		targetPorts []uint32
		volume      string // named volume mounted for the service's data
	}{
		{"clickhouse", "clickhouse/clickhouse-server:26.7", map[string]string{
			"CLICKHOUSE_DB":   "maumeter",
			"CLICKHOUSE_USER": "maumeter",
		}, []uint32{8123, 9000}, "/var/lib/clickhouse"},
		{"prometheus", "prom/prometheus:", nil, []uint32{9090}, "/prometheus"},
		{"grafana", "grafana/grafana:", nil, []uint32{3000}, "/var/lib/grafana"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			s := service(t, p, tc.service)
			if !strings.HasPrefix(s.Image, tc.imagePrefix) {
				t.Errorf("image: got %q, want prefix %q", s.Image, tc.imagePrefix)
			}
			checkHealthcheck(t, s)
			for k, want := range tc.env {
				if got := env(s, k); got != want {
					t.Errorf("environment %s: got %q, want %q", k, got, want)
				}
			}
			var targets []uint32
			for _, port := range s.Ports {
				targets = append(targets, port.Target)
			}
			for _, want := range tc.targetPorts {
				if !slices.Contains(targets, want) {
					t.Errorf("ports: got targets %v, want %d among them", targets, want)
				}
			}
			if !hasMount(s, types.VolumeTypeVolume, tc.volume) {
				t.Errorf("volumes: got %v, want a named volume at %s", s.Volumes, tc.volume)
			}
		})
	}

	ch := service(t, p, "clickhouse")
	if n := ch.Ulimits["nofile"]; n == nil || n.Soft < 262144 || n.Hard < 262144 {
		t.Errorf("clickhouse ulimits nofile: got %+v, want soft and hard ≥ 262144", n)
	}
}

func TestComposeRoles(t *testing.T) {
	p, dir := loadCompose(t)
	ch := service(t, p, "clickhouse")
	for _, r := range composeRoles {
		t.Run(r.name, func(t *testing.T) {
			s := service(t, p, r.name)
			if s.Image != composeImage {
				t.Errorf("image: got %q, want %q", s.Image, composeImage)
			}
			if s.Build == nil || s.Build.Context != dir || s.Build.Dockerfile != "Dockerfile" {
				t.Errorf("build: got %+v, want context %s and Dockerfile", s.Build, dir)
			}
			if len(s.Command) == 0 || s.Command[0] != r.command {
				t.Errorf("command: got %q, want first element %q", s.Command, r.command)
			}

			got := map[string]string{}
			for name, dep := range s.DependsOn {
				got[name] = dep.Condition
			}
			if !maps.Equal(got, r.dependsOn) {
				t.Errorf("depends_on:\n got %v\nwant %v", got, r.dependsOn)
			}

			// MAUMETER_KAFKA_BROKERS and the replication settings: TestComposeKafkaCluster.
			wantEnv := map[string]string{"MAUMETER_TENANTS": composeTenantsPath}
			if r.clickhouse {
				wantEnv["MAUMETER_CLICKHOUSE_ADDR"] = "clickhouse:9000"
				wantEnv["MAUMETER_CLICKHOUSE_DATABASE"] = env(ch, "CLICKHOUSE_DB")
				wantEnv["MAUMETER_CLICKHOUSE_USER"] = env(ch, "CLICKHOUSE_USER")
				wantEnv["MAUMETER_CLICKHOUSE_PASSWORD_FILE"] = "/run/secrets/" + composeCHSecret
				if !slices.ContainsFunc(s.Secrets, func(sc types.ServiceSecretConfig) bool {
					return sc.Source == composeCHSecret && sc.Target == "/run/secrets/"+composeCHSecret
				}) {
					t.Errorf("secrets: got %+v, want %s at /run/secrets/%s", s.Secrets, composeCHSecret, composeCHSecret)
				}
			} else if len(s.Secrets) > 0 || s.Environment["MAUMETER_CLICKHOUSE_PASSWORD_FILE"] != nil {
				t.Errorf("secrets %+v: want none: %s does not use ClickHouse", s.Secrets, r.name)
			}
			// A password in a role's own environment shows in `docker inspect`: files only.
			for _, secret := range []string{"MAUMETER_CLICKHOUSE_PASSWORD", "MAUMETER_KAFKA_SASL_PASSWORD"} {
				if _, ok := s.Environment[secret]; ok {
					t.Errorf("environment: got %s, want the password as a secret file (%s_FILE)", secret, secret)
				}
			}
			for key, want := range wantEnv {
				if got := env(s, key); got != want || want == "" {
					t.Errorf("environment %s: got %q, want %q (non-empty)", key, got, want)
				}
			}
			if !hasMount(s, types.VolumeTypeBind, composeTenantsPath) {
				t.Errorf("volumes: got %v, want a bind mount at %s", s.Volumes, composeTenantsPath)
			}
			for _, v := range s.Volumes {
				if v.Target == composeTenantsPath && !v.ReadOnly {
					t.Errorf("volume %s: got read-write, want read_only", v.Target)
				}
			}

			if r.name == "migrate" { // creates the events topic
				if n, err := strconv.Atoi(env(s, "MAUMETER_EVENTS_PARTITIONS")); err != nil || n < 1 {
					t.Errorf("environment MAUMETER_EVENTS_PARTITIONS: got %q, want a positive integer",
						env(s, "MAUMETER_EVENTS_PARTITIONS"))
				}
			}

			if r.port == "" { // a one-shot job: it must not be restarted after it exits 0
				if s.Restart != types.RestartPolicyNo {
					t.Errorf("restart: got %q, want %q", s.Restart, types.RestartPolicyNo)
				}
				return
			}
			if got, want := env(s, "MAUMETER_HTTP_ADDR"), ":"+r.port; got != want {
				t.Errorf("environment MAUMETER_HTTP_ADDR: got %q, want %q", got, want)
			}
			if got, want := env(s, "MAUMETER_ADMIN_ADDR"), ":"+composeAdminPort; got != want {
				t.Errorf("environment MAUMETER_ADMIN_ADDR: got %q, want %q (/metrics for Prometheus)", got, want)
			}
			for _, port := range s.Ports { // tenants' network is no place for /metrics and pprof
				if strconv.Itoa(int(port.Target)) == composeAdminPort {
					t.Errorf("ports: the admin listener %s is published (%+v), want it on the compose network only", composeAdminPort, port)
				}
			}
			checkHealthcheck(t, s)
			if s.HealthCheck != nil {
				got := []string(s.HealthCheck.Test)
				want := []string{"CMD", "/maumeter", "healthcheck", "--url", "http://127.0.0.1:" + r.port + "/readyz"}
				if !slices.Equal(got, want) {
					t.Errorf("healthcheck test:\n got %q\nwant %q", got, want)
				}
			}
		})
	}
}

// The roles run the maumeter binary: each service's command must be one of its subcommands, and
// every MAUMETER_* variable a service sets must be a flag of that subcommand (parseFlags reads
// MAUMETER_<FLAG> only for the flags a subcommand defines, so any other is silently ignored).
func TestComposeRolesMatchBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ./cmd/maumeter")
	}
	bin := filepath.Join(t.TempDir(), "maumeter")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/maumeter").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/maumeter: %v\n%s", err, out)
	}
	flagName := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	// flags returns the flags of a subcommand, from `maumeter <command> -h` (exit 0).
	flags := func(command string) []string {
		out, err := exec.Command(bin, command, "-h").CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Errorf("maumeter %s -h: exit %d: not a subcommand of the binary?\n%s", command, exit.ExitCode(), out)
			return nil
		} else if err != nil {
			t.Fatalf("maumeter %s -h: %v", command, err)
		}
		var names []string
		for _, m := range flagName.FindAllSubmatch(out, -1) {
			names = append(names, string(m[1]))
		}
		return names
	}

	p, _ := loadCompose(t)
	for _, r := range composeRoles {
		s := service(t, p, r.name)
		if len(s.Command) == 0 {
			continue // TestComposeRoles reports it
		}
		have := flags(s.Command[0])
		if have == nil {
			continue
		}
		for _, key := range slices.Sorted(maps.Keys(s.Environment)) {
			name, ok := strings.CutPrefix(key, "MAUMETER_")
			if !ok {
				continue
			}
			name = strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			if !slices.Contains(have, name) {
				t.Errorf("%s: environment %s: `maumeter %s` has no --%s flag (flags: %v)",
					r.name, key, s.Command[0], name, have)
			}
		}
	}
	if !slices.Contains(flags("healthcheck"), "url") {
		t.Errorf("maumeter healthcheck: want a --url flag, the role healthchecks call it")
	}
}

func TestComposePortsBindLoopback(t *testing.T) {
	p, _ := loadCompose(t)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, port := range p.Services[name].Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s port %d: got host_ip %q, want 127.0.0.1", name, port.Target, port.HostIP)
			}
			if port.Published == "" {
				t.Errorf("%s port %d: got no published port, want a fixed one", name, port.Target)
			}
		}
	}
	ingest := service(t, p, "ingest")
	if !slices.ContainsFunc(ingest.Ports, func(pc types.ServicePortConfig) bool {
		return pc.Target == 8080 && pc.Published == "8080"
	}) {
		t.Errorf("ingest ports: got %+v, want 127.0.0.1:8080:8080", ingest.Ports)
	}
}

func TestComposeMounts(t *testing.T) {
	p, _ := loadCompose(t)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, v := range p.Services[name].Volumes {
			switch v.Type {
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s volume %s: got source %q, want one of the declared volumes %v",
						name, v.Target, v.Source, slices.Sorted(maps.Keys(p.Volumes)))
				}
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s bind mount %s: source must exist on disk: %v", name, v.Target, err)
				}
				if !v.ReadOnly {
					t.Errorf("%s bind mount %s: got read-write, want read_only", name, v.Target)
				}
			default:
				t.Errorf("%s mount %s: got type %q, want volume or bind", name, v.Target, v.Type)
			}
		}
	}
}

func TestComposePrometheusScrapesEveryRole(t *testing.T) {
	p, _ := loadCompose(t)
	src := bindSource(t, service(t, p, "prometheus"), "/etc/prometheus/prometheus.yml")
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, src, &cfg, false)
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for _, r := range composeRoles {
		if r.port == "" {
			continue
		}
		if want := r.name + ":" + composeAdminPort; !slices.Contains(targets, want) {
			t.Errorf("%s: got targets %v, want %s among them", src, targets, want)
		}
	}
	for _, target := range targets { // a target with no service is a scrape that always fails
		host, _, _ := strings.Cut(target, ":")
		if _, ok := p.Services[host]; !ok && host != "localhost" {
			t.Errorf("%s: target %s: got no compose service %q, want one of %v",
				src, target, host, slices.Sorted(maps.Keys(p.Services)))
		}
	}

	gf := service(t, p, "grafana")
	ds := filepath.Join(bindSource(t, gf, "/etc/grafana/provisioning"), "datasources")
	entries, err := os.ReadDir(ds)
	if err != nil || len(entries) == 0 {
		t.Fatalf("grafana datasources in %s: got %d files (%v), want at least one", ds, len(entries), err)
	}
	data, err := os.ReadFile(filepath.Join(ds, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("url: http://prometheus:9090")) {
		t.Errorf("%s: want a datasource at url: http://prometheus:9090", entries[0].Name())
	}
}

// The example catalogue is the file the roles load: it must load with tenant.Load, the loader the
// roles use (format and validation), and cover one tenant of each kind the demo shows.
func TestComposeTenantsExample(t *testing.T) {
	p, _ := loadCompose(t)
	src := bindSource(t, service(t, p, "ingest"), composeTenantsPath)
	catalog, err := tenant.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tn := range catalog.Tenants {
		got = append(got, tn.Plan+" "+tn.Location().String())
		if strings.HasPrefix(tn.Plan, "poc_") && len(tn.Apps) > 0 {
			t.Errorf("tenant %s: got production apps %v, want none on a POC plan", tn.ID, tn.Apps)
		}
	}
	want := []string{"pro Asia/Shanghai", "enterprise America/New_York", "poc_pro Europe/Berlin"}
	if !slices.Equal(got, want) {
		t.Errorf("%s: plan and time zone of each tenant:\n got %q\nwant %q", src, got, want)
	}
}

// The example catalogue never runs without a plan in force: each tenant's plan (renewed every
// year in plan_history, with its contract) prices this month, by the clock (internal/clock), and
// the twelve after it, so this test fails a year before the renewals run out.
func TestComposeTenantsExampleInForce(t *testing.T) {
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	p, _ := loadCompose(t)
	src := bindSource(t, service(t, p, "rate"), composeTenantsPath)
	catalog, err := plans.LoadTenants(src)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.ForTest(t)()
	for _, tn := range catalog.Tenants {
		m := calendar.MonthOf(now, tn.Location())
		for range 13 {
			b := plans.Price(tn, plan.Usage{Month: m})
			if b.Plan != tn.Plan || b.Contract != (tn.Contract != nil) {
				t.Errorf("%s: tenant %s, %s: plan %q (contract %v, purchased %q); want %s, as purchased %s: add a yearly renewal to its plan_history",
					src, tn.ID, m, b.Plan, b.Contract, b.PlanPurchased, tn.Plan, tn.Purchased)
				break
			}
			m = m.Next()
		}
	}
}

// The development keys published beside the example catalogue (deploy/dev-ingest-keys for the
// load generator, deploy/dev-read-keys for curl) must be keys of the mounted catalogue, each of
// its kind and tenant: a stale file would make the README's commands answer 401.
func TestComposeDevKeys(t *testing.T) {
	p, _ := loadCompose(t)
	catalog, err := tenant.Load(bindSource(t, service(t, p, "rate"), composeTenantsPath))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("deploy/dev-ingest-keys")
	if err != nil {
		t.Fatal(err)
	}
	ingestKeys := map[string]bool{}
	for item := range strings.SplitSeq(strings.TrimSpace(string(data)), ",") {
		who, key, _ := strings.Cut(item, "=")
		k, err := catalog.Keyring().Authenticate(key)
		if err != nil || k.Tenant() != who {
			t.Errorf("deploy/dev-ingest-keys: %s: %v, %v; want an ingest key of %s", who, k, err, who)
		}
		ingestKeys[who] = true
	}
	data, err = os.ReadFile("deploy/dev-read-keys")
	if err != nil {
		t.Fatal(err)
	}
	readKeys := map[string]bool{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		who, key, _ := strings.Cut(line, "=")
		k, err := catalog.ReadKeyring().Authenticate(key)
		switch {
		case err != nil:
			t.Errorf("deploy/dev-read-keys: %s: %v", who, err)
		case who == "operator" && k.Kind() != tenant.KindOperator, who != "operator" && (k.Kind() != tenant.KindRead || k.Tenant() != who):
			t.Errorf("deploy/dev-read-keys: %s: a %s key of %q", who, k.Kind(), k.Tenant())
		}
		readKeys[who] = true
	}
	for _, tn := range catalog.Tenants {
		if !ingestKeys[tn.ID] || !readKeys[tn.ID] {
			t.Errorf("tenant %s: development ingest key %v, read key %v; want both", tn.ID, ingestKeys[tn.ID], readKeys[tn.ID])
		}
	}
	if !readKeys["operator"] {
		t.Error("deploy/dev-read-keys has no operator key")
	}
}

// The rater reads the mounted plan catalogue (MAUMETER_PLANS): it must load, equal the embedded
// one, and hold every plan of the example tenants.
func TestComposePlansExample(t *testing.T) {
	p, _ := loadCompose(t)
	rate := service(t, p, "rate")
	path := rate.Environment["MAUMETER_PLANS"]
	if path == nil {
		t.Fatal("rate: MAUMETER_PLANS is not set")
	}
	src := bindSource(t, rate, *path)
	plans, err := plan.LoadCatalog(src)
	if err != nil {
		t.Fatal(err)
	}
	def, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := plans.IDs(), def.IDs(); !slices.Equal(got, want) {
		t.Errorf("%s: plans %v, the embedded catalogue has %v", src, got, want)
	}
	if _, err := plans.LoadTenants(bindSource(t, rate, composeTenantsPath)); err != nil {
		t.Error(err)
	}
}

// The runtime image decides what a healthcheck may call: distroless has no shell and no wget.
func TestComposeDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{
		"FROM golang:1.26 AS build",
		"CGO_ENABLED=0",
		"./cmd/maumeter",
		"COPY --from=build /out/maumeter /maumeter",
		`ENTRYPOINT ["/maumeter"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile: want a line with %q", want)
		}
	}
	if !strings.Contains(df, "FROM gcr.io/distroless/") {
		return
	}
	p, _ := loadCompose(t)
	for _, r := range composeRoles {
		s := service(t, p, r.name)
		if s.HealthCheck != nil && len(s.HealthCheck.Test) > 1 && s.HealthCheck.Test[1] != "/maumeter" {
			t.Errorf("%s healthcheck: got %q, want the /maumeter binary: a distroless image has nothing else",
				r.name, s.HealthCheck.Test)
		}
	}
}

func checkHealthcheck(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	hc := s.HealthCheck
	if hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] == "NONE" {
		t.Errorf("healthcheck: got %+v, want a test command", hc)
		return
	}
	if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil {
		t.Errorf("healthcheck: got interval %v, timeout %v, retries %v, want all three set",
			hc.Interval, hc.Timeout, hc.Retries)
	}
}

func hasMount(s types.ServiceConfig, typ, target string) bool {
	return slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == typ && v.Target == target
	})
}

// bindSource returns the host path bind-mounted at target in s.
func bindSource(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source
		}
	}
	t.Fatalf("%s: got mounts %v, want a bind mount at %s", s.Name, s.Volumes, target)
	return ""
}

// decodeYAML decodes the file at path into v; strict rejects fields that v does not have.
func decodeYAML(t *testing.T, path string, v any, strict bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(strict)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
