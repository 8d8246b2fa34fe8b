package actions

// UserSetupScript creates the user in /etc/passwd and /etc/group with the
// first free uid from 1000, and its home. It needs only a POSIX sh with
// grep, cut and mkdir, so images without useradd work. Idempotent. It prints the uid and gid.
const UserSetupScript = `set -e
u="$1"; sh_="$2"; home="/home/$u"
if ! grep -q "^$u:" /etc/passwd; then
  uid=1000
  while cut -d: -f3 /etc/passwd | grep -qx "$uid"; do uid=$((uid+1)); done
  gid=$uid
  while cut -d: -f3 /etc/group 2>/dev/null | grep -qx "$gid"; do gid=$((gid+1)); done
  echo "$u:x:$gid:" >> /etc/group
  echo "$u:x:$uid:$gid:$u:$home:$sh_" >> /etc/passwd
fi
uid=$(grep "^$u:" /etc/passwd | cut -d: -f3)
gid=$(grep "^$u:" /etc/passwd | cut -d: -f4)
if [ ! -d "$home" ]; then mkdir -p "$home"; chown "$uid:$gid" "$home"; chmod 0750 "$home"; fi
echo "$uid $gid"
`
