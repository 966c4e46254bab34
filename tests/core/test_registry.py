import pytest

from vsrkit.registry import Registry, resolve


def test_register_by_path_imports_lazily():
    reg = Registry("thing")
    reg.register("join", "os.path:join", summary="x")
    entry = reg.entry("join")
    assert entry.impl == "os.path:join"  # not imported yet
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.entry("join").meta == {"summary": "x"}


def test_register_by_decorator_and_names_sorted():
    reg = Registry("thing")

    @reg.register("b")
    class B:
        pass

    reg.register("a", "os:getcwd")
    assert reg.names() == ["a", "b"]
    assert reg.get("b") is B
    assert "a" in reg and len(reg) == 2


def test_duplicate_name_names_both_modules():
    reg = Registry("method")
    reg.register("pssr", "pkg_one.method:A")
    with pytest.raises(ValueError, match=r"method `pssr` is registered twice: by `pkg_one.method` and by `pkg_two.method`"):
        reg.register("pssr", "pkg_two.method:B")


def test_unknown_name_lists_close_matches_and_all_names():
    reg = Registry("method")
    for name in ("bicubic", "lanczos", "sparkvsr"):
        reg.register(name, f"m:{name}")
    with pytest.raises(KeyError) as info:
        reg.get("bicubc")
    message = info.value.args[0]
    assert "Unknown method `bicubc`." in message
    assert "Did you mean `bicubic`?" in message
    assert "Known: bicubic, lanczos, sparkvsr." in message


def test_resolve_rejects_paths_without_attribute():
    with pytest.raises(ValueError, match="module:attribute"):
        resolve("os.path")


def test_every_builtin_impl_and_config_resolves():
    from vsrkit.plugins import setup_registries
    from vsrkit.registry import ALL

    setup_registries()
    count = 0
    for registry in ALL.values():
        for entry in registry.entries():
            assert registry.get(entry.name) is not None
            registry.get_config(entry.name)
            count += 1
    assert count >= 2
