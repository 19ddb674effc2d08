"""The review queue in the admin: teams (members are object permissions) and items, read-mostly."""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import transaction

from governance.roles import Role
from review.models import ReviewEvent, ReviewItem, Team
from review.permissions import SUPERVISE, WORK, team_members, team_membership_set


def _staff_with(*roles):
    return get_user_model().objects.filter(groups__name__in=list(roles), is_active=True).distinct().order_by("username")


class TeamForm(forms.ModelForm):
    """Members and supervisors are granted as django-guardian object permissions on the team."""

    agents = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(), required=False, widget=forms.CheckboxSelectMultiple,
        help_text="They see and work this team's items and the conversations behind them.")
    supervisors = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(), required=False, widget=forms.CheckboxSelectMultiple,
        help_text="They see this team's items and hear of its SLA breaches.")

    class Meta:
        model = Team
        fields = ["name", "sla_minutes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agents"].queryset = _staff_with(Role.AGENT, Role.SUPERVISOR)
        self.fields["supervisors"].queryset = _staff_with(Role.SUPERVISOR)
        if self.instance.pk:
            self.fields["agents"].initial = list(team_members(self.instance, WORK))
            self.fields["supervisors"].initial = list(team_members(self.instance, SUPERVISE))


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    form = TeamForm
    list_display = ("name", "sla_minutes", "created_at")
    search_fields = ("name",)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        team = form.instance
        before_work, before_sup = set(team_members(team, WORK)), set(team_members(team, SUPERVISE))
        after_work, after_sup = set(form.cleaned_data["agents"]), set(form.cleaned_data["supervisors"])
        with transaction.atomic():
            for user in (before_work | before_sup | after_work | after_sup):
                work, supervise = user in after_work, user in after_sup
                if (work, supervise) != (user in before_work, user in before_sup):
                    team_membership_set(actor=request.user, team=team, user=user, work=work, supervise=supervise)


class ReviewEventInline(admin.TabularInline):
    model = ReviewEvent
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "actor", "data", "created_at")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    """Items change only through the workspace; the admin shows them and their history."""

    list_display = ("title", "kind", "reason", "status", "priority", "team", "claimed_by", "sla_due_at", "created_at")
    list_filter = ("kind", "status", "reason", "team", "needed_human")
    list_select_related = ("team", "claimed_by")
    search_fields = ("title", "subject_id")
    inlines = [ReviewEventInline]

    def get_queryset(self, request):
        # Supervisors see their teams' items here too, as in the workspace.
        from review.permissions import items_visible_filter

        qs = super().get_queryset(request)
        visible = items_visible_filter(request.user)
        return qs if visible is None else qs.filter(visible)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
