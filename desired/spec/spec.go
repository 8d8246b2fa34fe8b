// Package spec builds what a session generation's objects look like in
// the runtime: labels and container specs, from the desired session alone,
// so that a plan carries everything its executor needs.
package spec

import (
	"maps"
	"slices"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// Container is what a create-container action creates.
type Container struct {
	Role        string                `json:"role"`
	Image       string                `json:"image"`
	Cmd         []string              `json:"cmd,omitempty"`
	Env         []string              `json:"env,omitempty"`
	Hostname    string                `json:"hostname,omitempty"`
	Network     string                `json:"network"`
	Aliases     []string              `json:"aliases,omitempty"`
	CPUs        float64               `json:"cpus,omitempty"`
	MemoryBytes int64                 `json:"memory_bytes,omitempty"`
	DiskBytes   int64                 `json:"disk_bytes,omitempty"`
	Security    desired.Security      `json:"security"`
	Volumes     []desired.VolumeMount `json:"volumes,omitempty"`
	Mounts      []desired.Mount       `json:"mounts,omitempty"`
	// User and Shell describe the account to set up inside a session
	// container (home /home/<user>), without needing useradd in the image.
	User  string `json:"user,omitempty"`
	Shell string `json:"shell,omitempty"`
}

// Labels are the labels of an object of session s: podspawn's own, which
// the session's extra labels cannot override.
func Labels(s *desired.Session, instanceID, role, service string) map[string]string {
	l := map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue,
		observed.LabelUser:      s.Key.User,
		observed.LabelProject:   s.Key.Project,
		observed.LabelSession:   s.ID,
		observed.LabelInstance:  instanceID,
		observed.LabelRole:      role,
	}
	if service != "" {
		l[observed.LabelService] = service
	}
	for k, v := range s.Spec.ExtraLabels {
		if _, reserved := l[k]; !reserved {
			l[k] = v
		}
	}
	return l
}

// Session is the session container of s: it sleeps, and connections exec
// into it as the user.
func Session(s *desired.Session) *Container {
	sp := s.Spec
	return &Container{
		Role: observed.RoleSession, Image: sp.Image, Cmd: []string{"sleep", "infinity"},
		Env: append([]string(nil), sp.Env...), Hostname: sp.Hostname, Network: sp.NetworkName, Aliases: []string{sp.ContainerName},
		CPUs: sp.CPUs, MemoryBytes: sp.MemoryBytes, DiskBytes: sp.DiskBytes, Security: cloneSecurity(sp.Security), Mounts: append([]desired.Mount(nil), sp.Mounts...),
		User: s.Key.User, Shell: sp.Shell,
	}
}

// Service is the container of one companion service of s, on the
// session's network under the service's name.
func Service(s *desired.Session, svc desired.Service) *Container {
	sp := s.Spec
	mem := svc.MemoryBytes
	if mem == 0 {
		mem = sp.MemoryBytes
	}
	disk := svc.DiskBytes
	if disk == 0 {
		disk = sp.DiskBytes
	}
	vols := make([]desired.VolumeMount, 0, len(svc.Volumes))
	for _, v := range svc.Volumes {
		vols = append(vols, desired.VolumeMount{Name: sp.VolumeName(svc.Name, v.Name), Target: v.Target})
	}
	return &Container{
		Role: observed.RoleService, Image: svc.Image, Cmd: append([]string(nil), svc.Command...), Env: append([]string(nil), svc.Env...),
		Hostname: svc.Name, Network: sp.NetworkName, Aliases: []string{svc.Name}, CPUs: svc.CPUs, MemoryBytes: mem, DiskBytes: disk,
		Security: cloneSecurity(sp.Security), Volumes: vols,
	}
}

// cloneSecurity copies the slices and map so that a plan shares nothing
// with the desired state it was computed from.
func cloneSecurity(s desired.Security) desired.Security {
	s.CapDrop, s.CapAdd, s.Tmpfs = slices.Clone(s.CapDrop), slices.Clone(s.CapAdd), maps.Clone(s.Tmpfs)
	return s
}
