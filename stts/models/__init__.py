"""Model families. Importing a family's file registers it (`stts.models.spec.register_family`); a new family
is one file here and one line below."""

from stts.models import mvit, swin  # noqa: F401 - registers the families
from stts.models.spec import FAMILIES, FamilySpec, Recipe, register_family

__all__ = ["FAMILIES", "FamilySpec", "Recipe", "register_family"]
