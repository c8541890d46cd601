# Sourced by the install scripts: make sure Debian packages are present.
#
#   ensure_debian_packages "what they are for" CHECK=PACKAGE ...
#
# CHECK is a command on PATH, an absolute path that must exist, or `python:MODULE` (importable by
# $PYTHON). Only missing packages are installed, so a second run costs a few stat calls. As root,
# they are installed with apt-get; otherwise the script stops and prints the command to run.

ensure_debian_packages() {
    local purpose="$1"
    shift
    local missing=() spec check package
    for spec in "$@"; do
        check="${spec%%=*}"
        package="${spec#*=}"
        case "$check" in
            python:*) "${PYTHON:-python3}" -c "import ${check#python:}" 2>/dev/null && continue ;;
            /*) [ -e "$check" ] && continue ;;
            *) command -v "$check" >/dev/null && continue ;;
        esac
        # one package may satisfy several checks
        [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local command="apt-get install -y --no-install-recommends ${missing[*]}"
    if ! command -v apt-get >/dev/null; then
        echo "[install] $purpose needs these Debian packages (or your system's equivalents):" \
            "${missing[*]}; install them, then run this script again" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "[install] $purpose needs the Debian packages ${missing[*]}; as root run:" >&2
        echo "    apt-get update && $command" >&2
        echo "then run this script again" >&2
        exit 1
    fi
    echo "[install] installing Debian packages for $purpose: ${missing[*]}"
    apt-get update -qq
    # Some packages try to start a service on install; in a container that fails harmlessly.
    DEBIAN_FRONTEND=noninteractive $command -qq
}
