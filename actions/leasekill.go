package actions

// LeaseKillScript kills the processes of a dead connection inside its
// session container. $1 is the lease's marker (PODSPAWN_LEASE=<id>): every
// process whose environment holds it is killed, with its descendants
// (which may have dropped the variable). It prints "killed <pid>" per
// process and scans again until a scan finds none it has not signalled
// yet, so a process forked during a round is caught by the next one; a
// signalled one may still be exiting, and SIGKILL cannot be refused.
// Exit 3 means new ones kept appearing.
//
// It uses nothing but sh builtins, because images are arbitrary (the
// busybox test image, distro images, project images): sh is already what
// the user setup needs. The shells in use (dash, bash, busybox ash) drop
// the NUL bytes of /proc/PID/environ on read, so the entries run together;
// an entry after the marker starts with a name, never a digit, which is
// why "marker then a non-digit" matches lease 12 and not lease 123.
//
// It runs as the session's user, not root: the default security profile
// drops every capability root would need to read another user's environ
// or signal its processes (CAP_SYS_PTRACE, CAP_KILL), while the user may
// do both for its own processes, which are all a connection can start
// (no_new_privileges forbids switching user).
const LeaseKillScript = `m=$1
self=$$
seen=" $self "
round=0
while :; do
	hit=
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		case $seen in *" $p "*) continue ;; esac
		e=
		{ while IFS= read -r l || [ -n "$l" ]; do e="$e$l
"; done; } 2>/dev/null <"$d/environ" || continue
		case $e in *"$m"[!0-9]*) hit="$hit $p " ;; esac
	done
	[ -z "$hit" ] && exit 0
	round=$((round + 1))
	if [ "$round" -gt 10 ]; then
		echo "processes carrying $m keep appearing" >&2
		exit 3
	fi
	tree=
	for d in /proc/[0-9]*; do
		s=
		read -r s 2>/dev/null <"$d/stat" || continue
		s=${s##*) }
		set -- $s
		[ "$1" = Z ] || tree="$tree ${d#/proc/}:$2"
	done
	grow=1
	while [ "$grow" = 1 ]; do
		grow=0
		for t in $tree; do
			case $hit$seen in *" ${t%%:*} "*) continue ;; esac
			case $hit$seen in *" ${t#*:} "*) hit="$hit ${t%%:*} " grow=1 ;; esac
		done
	done
	for p in $hit; do
		kill -9 "$p" 2>/dev/null && echo "killed $p"
		seen="$seen$p "
	done
done
`
