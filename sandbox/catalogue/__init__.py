from sandbox.catalogue.build import BuildReport, build_sandbox, open_backend
from sandbox.catalogue.generator import FillerGenerator, IdSpace
from sandbox.catalogue.golds import GoldBuilder, voucher_basket_total
from sandbox.catalogue.profile import CatalogueProfile, learn_profile

__all__ = ["BuildReport", "CatalogueProfile", "FillerGenerator", "GoldBuilder", "IdSpace", "build_sandbox",
           "learn_profile", "open_backend", "voucher_basket_total"]
