"""The catalogue: a profile learnt from the task files, gold products, fillers and the build pipeline."""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "sandbox.catalogue.build": ["BuildReport", "build_sandbox", "open_backend"],
    "sandbox.catalogue.generator": ["FillerGenerator", "IdSpace"],
    "sandbox.catalogue.golds": ["GoldBuilder", "voucher_basket_total"],
    "sandbox.catalogue.profile": ["CatalogueProfile", "learn_profile"],
})
