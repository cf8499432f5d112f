#!/usr/bin/env python3
"""Builds libseccomp's filter for a seccomp profile as Docker and runc build it on amd64, and
writes the BPF program libseccomp exports (struct sock_filter, raw).

  libseccomp_filter.py PROFILE.json KERNEL_MAJOR.MINOR OUT.bpf

Docker's conversion (moby/profiles seccomp_linux.go setupSeccomp): archMap's amd64 entry,
includes/excludes against arch "amd64", an empty capability set and the given kernel. runc's
rule building (libcontainer/seccomp/seccomp_linux.go InitSeccomp, matchCall): actions, ERRNO
without errnoRet is EPERM, entries equal to the default skipped, names libseccomp does not know
skipped, conditions on one argument index split into separate rules, optimize=2 past 32 entries.
Prints the names libseccomp has no number for, per ABI (JSON). Exit status 3 when libseccomp refuses the profile (runc would fail to start the container).
"""
import json
import sys

import seccomp

NATIVE = "amd64"


def action(name, errno):
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(1 if errno is None else errno)
    raise ValueError("unsupported action " + name)


OPS = {
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}

UNKNOWN_ON = {
    "x86_64": seccomp.Arch.X86_64,
    "x86": seccomp.Arch.X86,
    "x32": seccomp.Arch.X32,
}

ARCHES = {"SCMP_ARCH_X86": seccomp.Arch.X86, "SCMP_ARCH_X32": seccomp.Arch.X32}


def kernel_at_least(kernel, text):
    major, minor = text.split(".")
    return kernel >= (int(major), int(minor))


def docker_entries(profile, kernel):
    """setupSeccomp: the entries that apply on amd64 without capabilities."""
    for call in profile.get("syscalls") or []:
        names = call.get("names") or ([call["name"]] if call.get("name") else [])
        exc = call.get("excludes") or {}
        inc = call.get("includes") or {}
        if NATIVE in (exc.get("arches") or []):
            continue
        if exc.get("minKernel") and kernel_at_least(kernel, exc["minKernel"]):
            continue
        if inc.get("arches") and NATIVE not in inc["arches"]:
            continue
        if inc.get("caps"):
            continue
        if inc.get("minKernel") and not kernel_at_least(kernel, inc["minKernel"]):
            continue
        yield names, call


def main():
    path, kernel_text, out = sys.argv[1:4]
    kernel = tuple(int(x) for x in kernel_text.split("."))
    profile = json.load(open(path))
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    try:
        f = seccomp.SyscallFilter(default)
    except Exception as e:  # runc: invalid default action
        print("libseccomp refused the default action:", e, file=sys.stderr)
        sys.exit(3)
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == "SCMP_ARCH_X86_64":
            arches.append(entry["architecture"])
            arches.extend(entry.get("subArchitectures") or [])
    for arch in arches:
        if arch in ARCHES and not f.exist_arch(ARCHES[arch]):
            f.add_arch(ARCHES[arch])
    entries = list(docker_entries(profile, kernel))
    if sum(len(names) for names, _ in entries) > 32:
        f.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    f.set_attr(seccomp.Attr.CTL_NNP, 0)
    unknown = {arch: set() for arch in UNKNOWN_ON}
    try:
        for names, call in entries:
            act = action(call["action"], call.get("errnoRet"))
            if act == default:
                continue
            args = call.get("args") or []
            conds = [
                seccomp.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
                for a in args
            ]
            indices = [a["index"] for a in args]
            split = len(set(indices)) != len(indices)
            for name in names:
                for arch, token in UNKNOWN_ON.items():
                    if seccomp.resolve_syscall(token, name) < 0:
                        unknown[arch].add(name)
                if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) == -1:
                    continue  # runc: unknown to libseccomp, ignored
                try:
                    if split:
                        for c in conds:
                            f.add_rule(act, name, c)
                    else:
                        f.add_rule(act, name, *conds)
                except Exception as e:
                    raise RuntimeError("%s %r: %s" % (name, call, e))
    except Exception as e:  # runc fails the container
        print("libseccomp refused the profile:", e, file=sys.stderr)
        sys.exit(3)
    with open(out, "wb") as o:
        f.export_bpf(o)
    # The names this libseccomp has no number for, per ABI: the caller leaves them out.
    print(json.dumps({arch: sorted(names) for arch, names in unknown.items()}))


main()
