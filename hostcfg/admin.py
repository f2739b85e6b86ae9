from django.contrib import admin

from hostcfg.models import DeviceTag

admin.site.index_template = "admin/supervisor_index.html"
admin.site.site_header = "Supervisor administration"


@admin.register(DeviceTag)
class DeviceTagAdmin(admin.ModelAdmin):
    list_display = ("name", "value")
