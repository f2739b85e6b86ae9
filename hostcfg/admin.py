from django.contrib import admin

admin.site.index_template = "admin/supervisor_index.html"
admin.site.site_header = "Supervisor administration"
