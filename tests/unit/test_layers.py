"""The layers a maintainer can see: no import cycle among our modules (the layer contracts
themselves are import-linter's, in pyproject.toml, run by `make test` as `lint-imports`)."""
import grimp

PACKAGES = ("dreamq", "web", "worker", "shared")


def test_no_module_of_ours_imports_itself_through_others():
    graph = grimp.build_graph(*PACKAGES)  # imports inside functions count too
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_shared_imports_no_other_package_of_ours():
    graph = grimp.build_graph(*PACKAGES)
    for other in ("dreamq", "web", "worker"):
        chains = graph.find_shortest_chains(importer="shared", imported=other)
        assert not chains, f"shared imports {other}: {chains}"
