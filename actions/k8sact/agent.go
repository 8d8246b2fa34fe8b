package k8sact

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/podspawn/podspawn/desired"
)

// agentVolumes are the Pod's volumes for agent forwarding and the session
// container's mounts of them (spawn's side is in cmd/internal/spawn). A
// Pod runs on another node, so no host socket can be mounted into it:
// each connection's relay (cmd/agentrelay) listens in its own directory
// of desired.AgentMountTarget, and the relay program is copied into
// desired.AgentRelayDir on the first connection that needs it. Both are
// emptyDirs, gone with the Pod.
func agentVolumes() ([]corev1.Volume, []corev1.VolumeMount) {
	empty := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	return []corev1.Volume{{Name: "agent", VolumeSource: empty}, {Name: "agent-relay", VolumeSource: empty}},
		[]corev1.VolumeMount{{Name: "agent", MountPath: desired.AgentMountTarget}, {Name: "agent-relay", MountPath: desired.AgentRelayDir}}
}

// agentDirsScript narrows the kubelet's 0777 directories (both root's, so
// root needs no capability to chmod them). The sockets' directory becomes
// 1733, as /tmp but unlistable: the relay, run as the user, makes and
// removes its connection's directory there (0700, its own). The program's
// directory becomes 0755, so the relay spawn runs is the one it copied.
const agentDirsScript = `
chmod 1733 ` + desired.AgentMountTarget + `; chmod 0755 ` + desired.AgentRelayDir + `
`
